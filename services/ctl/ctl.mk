# services/ctl — fragment (filled in by its component).
