# services/noded — fragment (filled in by its component).
