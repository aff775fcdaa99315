"""Compiled sparse kernels (numba on the CPU, tensor operations elsewhere): edge weight-gradients for
the random-walk backward, a sparse Linear layer over a fixed mask, and a fused sparse Linear chain
for inference. numba is imported on first use."""

from sparse_lab.sparsity.kernels.edge_grad import edge_gradients
from sparse_lab.sparsity.kernels.sparse_chain import SparseChain
from sparse_lab.sparsity.kernels.sparse_linear import SparseLinear, sparsify_linears

__all__ = ["SparseChain", "SparseLinear", "edge_gradients", "sparsify_linears"]
