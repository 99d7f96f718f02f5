# services/trainer — fragment (filled in by its component).
