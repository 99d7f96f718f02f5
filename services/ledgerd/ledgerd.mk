# services/ledgerd — fragment (filled in by its component).
