# collectives — fragment.
