"""Node-side pieces of the operations package (run on Trainium nodes, standard library only)."""
