# services/admitd — fragment (filled in by its component).
