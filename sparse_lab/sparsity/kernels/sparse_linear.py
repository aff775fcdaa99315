"""A Linear layer over a fixed boolean mask whose forward, input gradient and weight gradient run on
compiled CSR kernels, and dense ones where the layer is too dense for sparse kernels to pay."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sparse_lab.sparsity.kernels._load import DTYPES, available, compiled

# Densities above which the dense kernels are faster, as measured by benchmarks/sparse_speed.py
# ("crossover", a 300x784 layer, 1 torch thread; the figures are in docs/speed.md): from batch 16 on
# (a full tile of 16 samples in vector registers) sparse forwards were faster up to density 0.2 to
# 0.3 and training steps up to 0.2 to 0.5 (two runs), by 1.17x or more at 0.2; below 16 samples the kernels run one
# sample at a time and lost from 2% density on (batch 8), and at batch 1 at every density measured,
# so small batches take the dense kernels (the fused SparseChain has its own limits).
DENSE_ABOVE = 0.2
DENSE_ABOVE_SMALL_BATCH = 0.0
SMALL_BATCH = 16


def csr_matmul(
    indptr: Tensor, indices: Tensor, weight: Tensor, positions: Tensor, dense_t: Tensor, rows: int, bias: Tensor | None = None
) -> Tensor:
    """``A @ dense_t`` (plus ``bias`` on each row) for the CSR matrix ``A`` (``rows`` x k) whose
    entry ``k`` is ``weight.view(-1)[positions[k]]``, and a contiguous ``(k, batch)`` tensor."""
    bias_values = bias.detach().numpy() if bias is not None else _NO_BIAS[dense_t.dtype]
    return _csr_matmul((indptr.numpy(), indices.numpy(), positions.numpy()), weight.detach().reshape(-1).numpy(),
                       dense_t, rows, bias_values)


def _csr_matmul(structure: tuple[np.ndarray, ...], flat: np.ndarray, dense_t: Tensor, rows: int, bias: np.ndarray) -> Tensor:
    """:func:`csr_matmul` over numpy views: ``structure`` = (indptr, indices, positions), ``flat``
    the weight's values, ``bias`` empty for none."""
    out_t = torch.empty(rows, dense_t.shape[1], dtype=dense_t.dtype)
    indptr, indices, positions = structure
    compiled()._csr_matmul(indptr, indices, flat, positions, dense_t.numpy(), bias, out_t.numpy())
    return out_t


_NO_BIAS = {dtype: np.empty(0, dtype=torch.empty(0, dtype=dtype).numpy().dtype) for dtype in DTYPES}


class _SparseLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, layer: SparseLinear) -> Tensor:
        x_t = transposed(x)
        ctx.save_for_backward(x_t, weight)
        ctx.layer = layer
        return layer._sparse_forward(x_t, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        x_t, weight = ctx.saved_tensors
        layer: SparseLinear = ctx.layer
        go_t = transposed(grad_out)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = _csr_matmul(layer._csc, layer._numpy_view("weight", weight), go_t, layer.in_features,
                                 _NO_BIAS[go_t.dtype]).t()
        grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = torch.zeros_like(weight)
            indptr, indices, _ = layer._csr
            compiled()._csr_dots(indptr, indices, go_t.numpy(), x_t.numpy(), grad_w.numpy())
        grad_b = grad_out.sum(0) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None


class SparseLinear(nn.Linear):
    """``y = x (W * mask)^T + b`` over a fixed boolean ``mask``: ``nn.Linear``'s output and gradients
    of the masked layer (the weight gradient is zero outside the mask), computed with compiled CSR
    kernels on the CPU where the layer's density is at most the crossover for the batch size
    (:data:`DENSE_ABOVE`, :data:`DENSE_ABOVE_SMALL_BATCH`), and with torch's dense kernels elsewhere
    (denser layers, other devices, other dtypes).

    An ``nn.Linear`` (code that looks for Linear layers finds it): ``weight`` stays a dense Parameter
    of the Linear's shape (zero outside the mask), and ``bias`` a Parameter, so optimizers,
    checkpoints and state-dict keys are those of ``nn.Linear``; the mask is a non-persistent buffer
    (its owner saves it; :meth:`set_mask` installs a new one). ``dense_above``: a density above which to use
    the dense kernels at every batch size instead of the measured crossovers (1: always sparse on
    the CPU; -1: always dense). The CSR structure is built from the mask once;
    each call gathers the current weight values into it. Inputs are 2-D ``(batch, in_features)``.

    ``dense_weight_grad``: while set, a forward that records gradients runs on torch's dense kernels
    over the whole weight, so that its weight gradient is dense (RigL's growth step reads it); its
    output is the same, as the weights outside the mask are zero.
    """

    def __init__(
        self,
        weight: Tensor | nn.Parameter,
        mask: Tensor,
        bias: Tensor | nn.Parameter | None = None,
        dense_above: float | None = None,
    ) -> None:
        nn.Module.__init__(self)  # nn.Linear's own would draw new parameters
        self.out_features, self.in_features = weight.shape
        self.weight = weight if isinstance(weight, nn.Parameter) else nn.Parameter(weight.detach().clone())
        self.bias = bias if isinstance(bias, nn.Parameter) or bias is None else nn.Parameter(bias.detach().clone())
        self.dense_above = dense_above
        self.dense_weight_grad = False
        self._views: dict[str, tuple[int, np.ndarray]] = {}
        self.register_buffer("mask", torch.empty(0, dtype=torch.bool), persistent=False)
        self.set_mask(mask)
        with torch.no_grad():
            self.weight.masked_fill_(~self.mask, 0)

    def set_mask(self, mask: Tensor) -> None:
        """Run over ``mask`` from now on (the CSR structure is rebuilt; the weights are not touched:
        their entries outside ``mask`` must be zero, as a :class:`~sparse_lab.sparsity.MaskSet` keeps them)."""
        if mask.shape != self.weight.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} differs from weight shape {tuple(self.weight.shape)}")
        self.mask = mask.to(device=self.weight.device, dtype=torch.bool)
        self.nnz = int(self.mask.sum())
        self.density = self.nnz / max(1, self.mask.numel())
        self._build_structure(self.mask.cpu())

    def _build_structure(self, mask: Tensor) -> None:
        """CSR of the mask (row pointers, column indices, flat positions in ``weight``) and CSR of its
        transpose, both int64 on the CPU."""
        rows, cols = mask.nonzero(as_tuple=True)
        self.csr_indptr = row_pointers(rows, self.out_features)
        self.csr_indices = cols.contiguous()
        self.csr_positions = rows * self.in_features + cols
        cols_t, rows_t = mask.t().nonzero(as_tuple=True)  # sorted by column of the weight
        self.csc_indptr = row_pointers(cols_t, self.in_features)
        self.csc_indices = rows_t.contiguous()
        self.csc_positions = rows_t * self.in_features + cols_t
        # numpy views of the same arrays, made once: converting on each call cost about 1 us an array
        self._csr = (self.csr_indptr.numpy(), self.csr_indices.numpy(), self.csr_positions.numpy())
        self._csc = (self.csc_indptr.numpy(), self.csc_indices.numpy(), self.csc_positions.numpy())

    def _numpy_view(self, name: str, tensor: Tensor) -> np.ndarray:
        """``tensor``'s values as a flat numpy array over its memory, made once per storage (``name``:
        weight or bias). The cached view keeps the storage it maps alive, so a storage that replaces
        it (``.to()``, ``.double()``) cannot have its address: a new address means a new view."""
        if not tensor.is_contiguous():  # reshape would copy: a cached copy would go stale
            return tensor.detach().reshape(-1).numpy()
        cached = self._views.get(name)
        if cached is None or cached[0] != tensor.data_ptr() or cached[1].size != tensor.numel():
            cached = (tensor.data_ptr(), tensor.detach().reshape(-1).numpy())
            self._views[name] = cached
        return cached[1]

    def density_limit(self, batch: int) -> float:
        """The density up to which a batch of ``batch`` samples runs on the sparse kernels."""
        if self.dense_above is not None:
            return self.dense_above
        return DENSE_ABOVE if batch >= SMALL_BATCH else DENSE_ABOVE_SMALL_BATCH

    def uses_sparse_kernels(self, batch: int, limit: float | None = None) -> bool:
        """Whether a batch of ``batch`` samples goes through the compiled sparse kernels (``limit``:
        instead of :meth:`density_limit`)."""
        limit = self.density_limit(batch) if limit is None else limit
        weight = self.weight
        return self.density <= limit and weight.is_cpu and weight.dtype in DTYPES and available()

    def forward(self, x: Tensor) -> Tensor:
        if self.dense_weight_grad and torch.is_grad_enabled() and self.weight.requires_grad:
            return F.linear(x, self.weight, self.bias)
        if not self.uses_sparse_kernels(x.shape[0]) or x.dtype != self.weight.dtype:
            weight = self.weight * self.mask if torch.is_grad_enabled() and self.weight.requires_grad else self.weight
            return F.linear(x, weight, self.bias)
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return _SparseLinearFn.apply(x, self.weight, self.bias, self)
        return self._sparse_forward(transposed(x), self.weight, self.bias)

    def _sparse_forward(self, x_t: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        bias_values = self._numpy_view("bias", bias) if bias is not None else _NO_BIAS[x_t.dtype]
        return _csr_matmul(self._csr, self._numpy_view("weight", weight), x_t, self.out_features, bias_values).t()

    def reset_parameters(self) -> None:
        """Draw the weights and bias afresh as ``nn.Linear`` does, then zero the weights outside the mask."""
        super().reset_parameters()
        with torch.no_grad():
            self.weight.masked_fill_(~self.mask, 0)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, density={self.density:.4f}"


def prepare(dtype: torch.dtype = torch.float32) -> None:
    """Load (or compile) the kernels a :class:`SparseLinear` of ``dtype`` trains on, with one step of a
    tiny layer, so that the first training step does not pay for it (about half a second here)."""
    if not available() or dtype not in DTYPES:
        return
    generator = torch.Generator().manual_seed(0)
    layer = SparseLinear(torch.randn(SMALL_BATCH, SMALL_BATCH, dtype=dtype, generator=generator),
                         torch.rand(SMALL_BATCH, SMALL_BATCH, generator=generator) < 0.5,
                         torch.zeros(SMALL_BATCH, dtype=dtype), dense_above=1.0)
    x = torch.randn(SMALL_BATCH, SMALL_BATCH, dtype=dtype, generator=generator, requires_grad=True)
    layer(layer(x)).sum().backward()


def transposed(x: Tensor) -> Tensor:
    """A contiguous copy of the 2-D CPU tensor's transpose, made by the compiled kernel (blocks of
    16 x 16 transposed in registers: a 128 x 784 batch in about a tenth of numpy's or torch's
    time here); ``x`` itself when it came transposed from the layer below."""
    if x.t().is_contiguous():
        return x.t()
    source = x.detach()
    if not source.is_contiguous():
        source = source.contiguous()
    out = torch.empty(source.shape[1], source.shape[0], dtype=source.dtype)
    compiled()._transpose(source.numpy(), out.numpy())
    return out


def row_pointers(sorted_rows: Tensor, n_rows: int) -> Tensor:
    """CSR row pointers from the (sorted) row index of every stored entry."""
    counts = torch.bincount(sorted_rows, minlength=n_rows)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def sparsify_linears(model: nn.Module, masks: Mapping[str, Tensor], dense_above: float | None = None) -> dict[str, SparseLinear]:
    """Replace, in place, each ``nn.Linear`` of ``model`` whose weight is named in ``masks``
    (``{"net.1.weight": bool mask}``) by a :class:`SparseLinear` over that mask, sharing the
    Linear's Parameter objects (an optimizer built before keeps working; their values outside the
    mask are zeroed); a layer that is a SparseLinear already takes the new mask (:meth:`SparseLinear.set_mask`).
    ``dense_above`` as :class:`SparseLinear`'s, for the new layers. Returns the layers by module name."""
    replaced = {}
    for param_name, mask in masks.items():
        module_name, _, leaf = param_name.rpartition(".")
        linear = model.get_submodule(module_name)
        if isinstance(linear, SparseLinear) and leaf == "weight":
            linear.set_mask(mask)
            replaced[module_name] = linear
            continue
        if leaf != "weight" or type(linear) is not nn.Linear:
            raise ValueError(f"{param_name!r} is not the weight of an nn.Linear in {type(model).__name__}")
        layer = SparseLinear(linear.weight, mask, linear.bias, dense_above)
        parent_name, _, child = module_name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer)
        replaced[module_name] = layer
    return replaced
