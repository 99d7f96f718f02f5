# services/consoled — fragment (filled in by its component).
