"""sparse_lab: Hydra-configured PyTorch Lightning experiments for sparse and backprop-free training."""

__version__ = "0.1.0"
