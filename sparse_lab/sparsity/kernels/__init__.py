"""Compiled sparse kernels (numba on the CPU, tensor operations elsewhere): edge weight-gradients for
the random-walk backward, a sparse Linear layer over a mask (and a keeper that follows a MaskSet's masks with them), and a fused sparse Linear chain
for inference. numba is imported on first use."""

from sparse_lab.sparsity.kernels.edge_grad import edge_gradients
from sparse_lab.sparsity.kernels.masked_linears import MaskedLinearKernels
from sparse_lab.sparsity.kernels.sparse_chain import SparseChain
from sparse_lab.sparsity.kernels.sparse_linear import SparseLinear, sparsify_linears

__all__ = ["MaskedLinearKernels", "SparseChain", "SparseLinear", "edge_gradients", "sparsify_linears"]
