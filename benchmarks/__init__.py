"""opero's benchmarks: ``run.py`` runs every shape beside every peer (``make bench``)."""
