"""Edge-sparse and row-sparse backward of the random-walk methods against dense-then-mask."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from sparse_lab.app import train
from sparse_lab.callbacks import RandomWalkGradientMask
from sparse_lab.errors import ConfigError
from sparse_lab.models import MLP
from sparse_lab.sparsity import RandomWalkMask, RowSparseLinear, keep_edge_gradients, use_row_sparse_backward
from sparse_lab.sparsity import row_sparse
from sparse_lab.sparsity.kernels import edge_gradients
from tests.conftest import make_cfg
from tests.helpers import final_state


def twins(seed: int = 0, hidden=(16, 12)) -> tuple[MLP, MLP]:
    torch.manual_seed(seed)
    dense = MLP((1, 5, 5), 10, hidden)
    sparse = MLP((1, 5, 5), 10, hidden)
    sparse.load_state_dict(dense.state_dict())
    use_row_sparse_backward(sparse)
    return dense, sparse


def dense_then_mask(model: MLP, x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> None:
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    keep_edge_gradients(model.linears, rows, cols, backend="torch")


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize(("start", "bias"), [("random", "weight"), ("target", "weight"), ("target", "uniform")])
def test_edge_gradients_equal_dense_masked_gradients_on_every_layer(start: str, bias: str, backend: str) -> None:
    dense, sparse = twins()
    with torch.no_grad():  # an all-zero row: the walk falls back to uniform there
        for model in (dense, sparse):
            model.linears[1].weight[3] = 0
    x, y = torch.randn(32, 1, 5, 5), torch.randint(0, 10, (32,))
    rows, cols = RandomWalkMask(40, start=start, bias=bias).edges(dense.linears, y, torch.Generator().manual_seed(1))
    assert len({(int(r), int(c)) for r, c in zip(rows[0], cols[0])}) < 40  # duplicate edges are in the walk
    dense_then_mask(dense, x, y, rows, cols)
    for lin, r, c in zip(sparse.linears, rows, cols):
        lin.active_edges = (r, c)
    if backend == "torch":  # the tensor path that serves GPUs, forced on the CPU
        original = edge_gradients.__globals__["on_cpu"]
        edge_gradients.__globals__["on_cpu"] = lambda tensors: False
    try:
        nn.functional.cross_entropy(sparse(x), y).backward()
    finally:
        if backend == "torch":
            edge_gradients.__globals__["on_cpu"] = original
    for (name, a), b in zip(dense.named_parameters(), sparse.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name
        assert torch.equal(a.grad != 0, b.grad != 0), name
    for lin, r, c in zip(dense.linears, rows, cols):  # exactly the walked edges and visited rows survive
        assert int((lin.weight.grad != 0).sum()) == len({(int(i), int(j)) for i, j in zip(r, c) if lin.weight.grad[i, j] != 0})
        assert int((lin.weight.grad != 0).sum()) > 0
        assert set(lin.bias.grad.nonzero().squeeze(1).tolist()) <= set(r.tolist())


def test_edge_gradients_of_a_layer_without_bias_and_with_repeated_edges() -> None:
    go, x = torch.randn(9, 4), torch.randn(9, 6)
    rows, cols = torch.tensor([1, 1, 1, 3]), torch.tensor([2, 2, 5, 0])
    for backend in ("auto", "torch"):
        grad_w, grad_b = edge_gradients(go, x, rows, cols, with_bias=False, backend=backend)
        expected = torch.zeros(4, 6)
        full = go.t() @ x
        for r, c in ((1, 2), (1, 5), (3, 0)):
            expected[r, c] = full[r, c]
        assert grad_b is None and torch.allclose(grad_w, expected, atol=1e-6)
        assert int((grad_w != 0).sum()) == 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_edge_gradients_across_partial_tiles_and_strided_operands(dtype: torch.dtype) -> None:
    """The compiled kernel transposes both operands in blocks of 16 in registers: a batch of 37 (two
    blocks and 5 samples) and widths that are no multiple of 16, given as strided views, must give
    the dense product at every edge and the batch sums at every visited row."""
    gen = torch.Generator().manual_seed(3)
    go = torch.randn(21, 37, generator=gen, dtype=dtype).t()  # (37, 21), not contiguous
    x = torch.randn(37, 70, generator=gen, dtype=dtype)[:, ::2]  # (37, 35), not contiguous
    rows = torch.randint(0, 21, (200,), generator=gen)
    cols = torch.randint(0, 35, (200,), generator=gen)
    full, sums = go.t() @ x, go.sum(0)
    mask = torch.zeros_like(full, dtype=torch.bool)
    mask[rows, cols] = True
    for backend in ("auto", "torch"):
        grad_w, grad_b = edge_gradients(go, x, rows, cols, backend=backend)
        assert grad_w.dtype == dtype and torch.equal(grad_w != 0, mask & (full != 0))
        assert torch.allclose(grad_w, full * mask, atol=1e-5)
        assert torch.allclose(grad_b[rows], sums[rows], atol=1e-5)
        assert int((grad_b != 0).sum()) == len(set(rows.tolist()))


def test_row_sparse_backward_with_a_row_mask_takes_either_path_to_the_same_gradients() -> None:
    _, sparse = twins(2)
    x, y = torch.randn(16, 1, 5, 5), torch.randint(0, 10, (16,))
    grads = []
    for gather_below in (0.0, 1.1):  # 0: always the masked dense products; 1.1: always gather rows
        sparse.zero_grad()
        old, row_sparse.GATHER_BELOW = row_sparse.GATHER_BELOW, gather_below
        try:
            for lin, rows in zip(sparse.linears, (torch.arange(16), torch.tensor([5, 7, 7]), torch.tensor([2, 0]))):
                lin.set_rows(rows)
            nn.functional.cross_entropy(sparse(x), y).backward()
        finally:
            row_sparse.GATHER_BELOW = old
        grads.append([p.grad.clone() for p in sparse.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6)
    mid, top = sparse.linears[1], sparse.linears[2]
    assert torch.equal(mid.active_rows, torch.tensor([5, 7])) and int((mid.bias.grad != 0).sum()) <= 2
    assert (top.weight.grad[[1, 3, 4, 5, 6, 7, 8, 9]] == 0).all() and top.weight.grad[[0, 2]].abs().sum() > 0


def test_edges_backward_refuses_the_gradient_bias() -> None:
    with pytest.raises(ConfigError, match="rw_backward=edges draws the walk before backward"):
        RandomWalkGradientMask(RandomWalkMask(5, bias="gradient"), backward="edges")


@pytest.mark.parametrize("method", ["rw_target", "rw_random"])
def test_edges_run_ends_with_the_weights_of_the_dense_run(tmp_path: Path, method: str) -> None:
    assert_edges_run_ends_like_the_dense_run(tmp_path, f"method={method}")


def assert_edges_run_ends_like_the_dense_run(tmp_path: Path, *overrides: str, fast: bool = True) -> None:
    """A short run with ``rw_backward=edges`` ends with the weights of the same run with ``dense``
    (``fast=False``: ``overrides`` choose data and hardware, as the GPU tests do)."""
    common = [*overrides, "paths=20", "model.hidden=[32,16]", "+trainer.limit_train_batches=6", "data.test_each_epoch=false"]
    train(make_cfg(tmp_path / "dense", *common, "rw_backward=dense", fast=fast))
    train(make_cfg(tmp_path / "edges", *common, "rw_backward=edges", fast=fast))
    a, b = final_state(tmp_path / "dense"), final_state(tmp_path / "edges")
    assert a.keys() == b.keys() and len(a) == 6
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key


def test_only_the_sparse_backwards_swap_the_linear_layers() -> None:
    for backward, kind in (("dense", nn.Linear), ("edges", RowSparseLinear), ("rows", RowSparseLinear)):
        model = MLP((1, 5, 5), 10, (8,))
        module = nn.Module()
        module.model = model
        module.device = torch.device("cpu")
        RandomWalkGradientMask(RandomWalkMask(5), backward=backward).on_fit_start(None, module)
        assert [type(m) for m in model.linears] == [kind, kind]


@pytest.mark.parametrize("backward", ["edges", "rows"])
def test_first_layers_input_gradient_restricted_to_its_visited_rows_changes_no_gradient(backward: str) -> None:
    _, full_input = twins(3, hidden=(24, 12))
    _, restricted = twins(3, hidden=(24, 12))
    x, y = torch.randn(16, 1, 5, 5), torch.randint(0, 10, (16,))
    rows, cols = RandomWalkMask(4).edges(restricted.linears, y, torch.Generator().manual_seed(2))
    visited = torch.unique(rows[0])
    assert visited.numel() < row_sparse.GATHER_BELOW * 24  # the restricted product is taken
    for model in (full_input, restricted):
        for lin, r, c in zip(model.linears, rows, cols):
            lin.set_rows(r) if backward == "rows" else setattr(lin, "active_edges", (r, c))
    restricted.linears[1].input_rows = visited
    for model in (full_input, restricted):
        nn.functional.cross_entropy(model(x), y).backward()
    for (name, a), b in zip(full_input.named_parameters(), restricted.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name
    assert int((restricted.linears[0].weight.grad != 0).sum()) > 0
