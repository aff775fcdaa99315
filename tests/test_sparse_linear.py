"""SparseLinear and SparseChain against the masked dense layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparse_lab.sparsity.kernels import SparseChain, SparseLinear, sparsify_linears
from sparse_lab.sparsity.kernels.sparse_linear import DENSE_ABOVE_SMALL_BATCH, transposed


def masked_case(out_f: int, in_f: int, density: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_f, in_f, generator=gen)
    mask = torch.rand(out_f, in_f, generator=gen) < density
    if out_f > 2:
        mask[1] = False  # an empty row
    return weight, mask, torch.randn(out_f, generator=gen)


@pytest.mark.parametrize("dense_above", [1.0, -1.0, None])  # always sparse kernels, always dense, measured crossover
@pytest.mark.parametrize(
    ("out_f", "in_f", "density", "batch"),
    [(30, 50, 0.05, 7), (30, 50, 0.3, 16), (64, 200, 0.02, 130), (5, 3, 1.0, 4), (12, 9, 0.0, 5), (1, 40, 0.5, 1)],
)
def test_forward_and_both_gradients_equal_the_masked_dense_layer(
    out_f: int, in_f: int, density: float, batch: int, dense_above: float | None
) -> None:
    weight, mask, bias = masked_case(out_f, in_f, density)
    layer = SparseLinear(weight.clone(), mask, bias.clone(), dense_above=dense_above)
    assert layer.nnz == int(mask.sum()) and torch.equal(layer.weight != 0, mask & (weight != 0))
    if dense_above is not None:
        assert layer.uses_sparse_kernels(batch) == (dense_above > 0)
    ref_w, ref_b = nn.Parameter(weight.clone()), nn.Parameter(bias.clone())
    x = torch.randn(batch, in_f, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    y, y_ref = layer(x), nn.functional.linear(x_ref, ref_w * mask, ref_b)
    g = torch.randn_like(y_ref)
    y.backward(g)
    y_ref.backward(g)
    assert torch.allclose(y, y_ref, atol=1e-5)
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-5)
    assert torch.allclose(layer.weight.grad, ref_w.grad, atol=1e-5)
    assert torch.allclose(layer.bias.grad, ref_b.grad, atol=1e-5)
    assert not layer.weight.grad[~mask].any()
    with torch.no_grad():
        assert torch.allclose(layer(x), y_ref, atol=1e-5)


def test_sparse_kernels_are_taken_below_the_crossover_only() -> None:
    weight, mask, bias = masked_case(40, 60, 0.05)
    assert SparseLinear(weight, mask, bias).uses_sparse_kernels(128)
    assert not SparseLinear(weight, torch.ones_like(mask), bias).uses_sparse_kernels(128)
    assert not SparseLinear(weight, mask, bias, dense_above=-1).uses_sparse_kernels(128)
    assert SparseLinear(weight.double(), mask, bias.double()).uses_sparse_kernels(128)
    assert not SparseLinear(weight.half(), mask, bias.half()).uses_sparse_kernels(128)
    small = SparseLinear(weight, mask, bias)
    assert small.uses_sparse_kernels(1) is (small.density <= DENSE_ABOVE_SMALL_BATCH)


def test_sparsify_linears_swaps_named_layers_and_keeps_parameters_and_state_dict_keys() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 4))
    keys = model.state_dict().keys()
    weight0 = model[0].weight
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    mask = torch.rand(16, 20) < 0.1
    replaced = sparsify_linears(model, {"0.weight": mask}, dense_above=1.0)
    assert list(replaced) == ["0"] and isinstance(model[0], SparseLinear) and type(model[2]) is nn.Linear
    assert model[0].weight is weight0 and model.state_dict().keys() == keys
    assert int((model[0].weight != 0).sum()) == int(mask.sum())
    x = torch.randn(8, 20)
    nn.functional.mse_loss(model(x), torch.zeros(8, 4)).backward()
    optimizer.step()
    assert not model[0].weight[~mask].any()  # a masked weight's gradient is zero, so SGD keeps it at zero
    with torch.no_grad():  # the layer reads the stepped weights, not values gathered before the step
        assert torch.allclose(model[0](x), nn.functional.linear(x, model[0].weight, model[0].bias), atol=1e-6)
    with pytest.raises(ValueError, match="not the weight of an nn.Linear"):
        sparsify_linears(model, {"1.weight": mask})


@pytest.mark.parametrize("batch", [1, 3, 40])
def test_fused_chain_equals_the_masked_dense_mlp(batch: int) -> None:
    torch.manual_seed(batch)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(48, 30), nn.ReLU(), nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 5))
    with torch.no_grad():
        for lin in (mlp[1], mlp[3], mlp[5]):
            lin.weight.mul_(torch.rand_like(lin.weight) < 0.04)
        mlp[3].weight[2] = 0  # an empty row
    chain = SparseChain.from_linears([mlp[1], mlp[3], mlp[5]])
    for layer in chain.layers:
        layer.dense_above = 1.0  # every layer on the sparse kernels: the fused call
    x = torch.randn(batch, 3, 4, 4)
    with torch.no_grad():
        assert torch.allclose(chain(x), mlp(x), atol=1e-5)
        chain.layers[1].dense_above = -1.0  # one dense layer: layer by layer
        assert torch.allclose(chain(x), mlp(x), atol=1e-5)


@pytest.mark.parametrize(
    ("in_f", "batch", "dtype"),
    [(48, 2, torch.float32), (48, 16, torch.float32), (48, 17, torch.float32), (50, 40, torch.float32),
     (64, 130, torch.float32), (33, 5, torch.float64), (64, 32, torch.float64)],
)
def test_tiled_chain_equals_the_masked_mlp_on_partial_tiles_odd_widths_and_doubles(
    in_f: int, batch: int, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tiled kernel (16 samples a tile, transposed in registers, only the inputs some weight
    reads kept): full and short last tiles, input widths that are no multiple of 16, float64, an
    unread input, an empty row, a layer without nonzeros in a row's reach, NaN where a weight reads it."""
    torch.manual_seed(batch)
    linears = [nn.Linear(in_f, 40), nn.Linear(40, 17), nn.Linear(17, 3)]
    mlp = nn.Sequential(linears[0], nn.ReLU(), linears[1], nn.ReLU(), linears[2]).to(dtype)
    with torch.no_grad():
        for lin in linears:
            lin.weight.mul_(torch.rand_like(lin.weight) < 0.15)
        linears[0].weight[:, 5] = 0  # an input no weight reads: a NaN there must not reach the outputs
        linears[1].weight[4] = 0  # an empty row: its bias alone
    chain = SparseChain.from_linears(linears)
    for layer in chain.layers:
        layer.dense_above = 1.0
    x = torch.randn(batch, in_f, dtype=dtype)
    with torch.no_grad():
        expected = mlp(x)
        x[:, 5] = float("nan")
        monkeypatch.setattr(SparseLinear, "forward", lambda *_: pytest.fail("layer by layer, not the fused call"))
        kernels = chain._kernels
        monkeypatch.setattr(kernels, "_chain_forward_scatter", lambda *_: pytest.fail("the scatter kernel, not the tiled one"))
        got = chain(x)
    assert got.dtype == dtype and got.shape == (batch, 3)
    assert torch.allclose(got, expected, atol=1e-5 if dtype == torch.float32 else 1e-12)


def test_weights_changed_by_fused_adam_reach_forward_and_backward() -> None:
    weight, mask, bias = masked_case(20, 30, 0.1)
    layer = SparseLinear(weight, mask, bias, dense_above=1.0)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.1, fused=True)
    x = torch.randn(16, 30, requires_grad=True)
    for _ in range(3):
        optimizer.zero_grad()
        layer(x).square().sum().backward()
        optimizer.step()
    x.grad = None
    y = layer(x)
    y.sum().backward()
    reference = x.detach().requires_grad_()
    expected = nn.functional.linear(reference, layer.weight.detach(), layer.bias.detach())
    expected.sum().backward()
    assert torch.allclose(y, expected, atol=1e-5) and torch.allclose(x.grad, reference.grad, atol=1e-5)


def test_forward_follows_weights_whose_storage_is_replaced() -> None:
    """The layer keeps numpy views of its weight and bias between calls: values written in place,
    a new storage (``param.data = ...``, a load, ``.double()``) and a non-contiguous weight must all
    reach the kernels."""
    weight, mask, bias = masked_case(20, 30, 0.1)
    layer = SparseLinear(weight, mask, bias, dense_above=1.0)
    x = torch.randn(16, 30)

    def check() -> None:
        with torch.no_grad():
            got = layer(x.to(layer.weight.dtype))
            expected = nn.functional.linear(x.to(layer.weight.dtype), layer.weight * layer.mask, layer.bias)
        assert torch.allclose(got, expected, atol=1e-5)

    check()
    with torch.no_grad():
        layer.weight.mul_(3.0)
        layer.bias.add_(1.0)
    check()
    old = layer.weight.data
    layer.weight.data = torch.randn(20, 30) * mask  # a new storage while the old one is still alive
    layer.bias.data = torch.randn(20)
    assert layer.weight.data_ptr() != old.data_ptr()
    check()
    layer.load_state_dict({"weight": torch.randn(20, 30) * mask, "bias": torch.zeros(20)})
    check()
    layer.double()
    check()
    layer.weight.data = (torch.randn(30, 20, dtype=torch.float64) * mask.t()).t()  # not contiguous
    check()
    with torch.no_grad():
        layer.weight.mul_(-1.0)
    check()


@pytest.mark.parametrize("batch", [1, 2, 7, 8, 40])
def test_fused_chain_skips_background_inputs_and_still_equals_the_masked_mlp(batch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inputs mostly at a per-feature background value (black pixels after normalization), an empty
    input column, a sample all background: every kernel (scatter below SMALL_BATCH, CSR above)
    gives the masked dense MLP's outputs."""
    torch.manual_seed(batch)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(48, 30), nn.ReLU(), nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 5))
    with torch.no_grad():
        for lin in (mlp[1], mlp[3], mlp[5]):
            lin.weight.mul_(torch.rand_like(lin.weight) < 0.1)
        mlp[1].weight[:, 7] = 0  # an input no weight reads
    background = torch.linspace(-0.5, 0.3, 48)
    x = torch.randn(batch, 48)
    x = torch.where(torch.rand(batch, 48) < 0.8, background, x)
    x[0] = background  # a sample that is all background
    chain = SparseChain.from_linears([mlp[1], mlp[3], mlp[5]], input_background=background)
    for layer in chain.layers:
        layer.dense_above = 1.0
    with torch.no_grad():
        expected = mlp(x)
        monkeypatch.setattr(SparseLinear, "forward", lambda *_: pytest.fail("layer by layer, not the fused call"))
        assert torch.allclose(chain(x.view(batch, 3, 4, 4)), expected, atol=1e-5)
    with pytest.raises(ValueError, match="47 values for 48 input features"):
        SparseChain.from_linears([mlp[1], mlp[3], mlp[5]], input_background=background[:47])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("rows", "cols"), [(1, 1), (16, 16), (17, 33), (128, 784), (5, 40), (40, 5)])
def test_transposed_copies_exactly_in_blocks_and_edges(rows: int, cols: int, dtype: torch.dtype) -> None:
    """The register-blocked transpose (16 x 16 blocks, the rest element by element) is an exact copy."""
    x = torch.randn(rows, cols, dtype=dtype)
    t = transposed(x)
    assert t.is_contiguous() and t.dtype == dtype and torch.equal(t, x.t())
    assert torch.equal(transposed(x[:, : max(1, cols // 2)]), x[:, : max(1, cols // 2)].t())  # a non-contiguous view


@pytest.mark.parametrize("batch", [16, 33])
def test_float64_layer_runs_the_tiled_kernels_and_equals_the_masked_dense_layer(batch: int) -> None:
    weight, mask, bias = masked_case(24, 40, 0.2)
    layer = SparseLinear(weight.double(), mask, bias.double(), dense_above=1.0)
    assert layer.uses_sparse_kernels(batch)
    x = torch.randn(batch, 40, dtype=torch.float64, requires_grad=True)
    layer(x).square().sum().backward()
    reference = x.detach().clone().requires_grad_()
    w = (weight.double() * mask).requires_grad_()
    b = bias.double().requires_grad_()
    nn.functional.linear(reference, w, b).square().sum().backward()
    assert torch.allclose(x.grad, reference.grad, atol=1e-10)
    assert torch.allclose(layer.weight.grad, w.grad * mask, atol=1e-10) and torch.allclose(layer.bias.grad, b.grad, atol=1e-10)
