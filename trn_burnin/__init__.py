"""Node-side burn-in for Trainium: an NKI GEMM on every NeuronCore, judged and reported per node."""

__version__ = "0.1.0"
