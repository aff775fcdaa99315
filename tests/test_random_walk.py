"""Random-walk masks, gradient masking, row-sparse backward and update statistics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from sparse_lab.app import train
from sparse_lab.callbacks import RandomWalkGradientMask, UpdateStats
from sparse_lab.errors import ConfigError
from sparse_lab.models import MLP, SmallCNN
from sparse_lab.sparsity import (
    RandomWalkMask,
    RowSparseLinear,
    edge_masks,
    keep_edge_gradients,
    linear_chain,
    mask_gradients,
    use_row_sparse_backward,
)
from tests.conftest import REPO, make_cfg

BACKENDS = ["torch", "numba"]  # the tensor walk and the compiled CPU walk: both must pass every walk test


def mlp(seed: int = 0, hidden=(16, 12)) -> MLP:
    torch.manual_seed(seed)
    return MLP((1, 5, 5), 10, hidden)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bias", ["weight", "uniform"])
def test_each_path_is_one_connected_edge_per_layer(bias: str, backend: str) -> None:
    model = mlp()
    weights = [lin.weight for lin in model.linears]
    sampler = RandomWalkMask(50, start="random", bias=bias, backend=backend)
    starts = sampler.start_units(10, None, gen())
    edges = sampler.walk(weights, starts, gen())
    assert len(edges) == 3 and torch.equal(edges[-1][0], starts)
    for lower, upper in zip(edges, edges[1:]):
        assert torch.equal(upper[1], lower[0])  # the walk continues from where the layer above ended
    for w, (rows, cols) in zip(weights, edges):
        assert rows.shape == cols.shape == (50,)
        assert (rows < w.shape[0]).all() and (cols < w.shape[1]).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_weights_are_never_walked_and_zero_rows_fall_back_to_uniform(backend: str) -> None:
    w = torch.tensor([[0.0, 1.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    sampler = RandomWalkMask(20000, start="random", backend=backend)
    (rows, cols), = sampler.walk([w], torch.tensor([0, 1]).repeat(10000), gen())
    top, zero = cols[rows == 0], cols[rows == 1]
    assert set(top.tolist()) == {1, 2}
    assert (top == 2).float().mean().item() == pytest.approx(0.75, abs=0.02)  # proportional to |W|
    assert set(zero.tolist()) == {0, 1, 2, 3}


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_bias_follows_the_gradient(backend: str) -> None:
    w = torch.ones(1, 3)
    g = torch.tensor([[0.0, 0.0, 5.0]])
    sampler = RandomWalkMask(100, start="random", bias="gradient", backend=backend)
    (_, cols), = sampler.walk([w], torch.zeros(100, dtype=torch.long), gen(), [g])
    assert (cols == 2).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_masks_mark_at_most_paths_edges_and_exactly_the_visited_rows(backend: str) -> None:
    model = mlp()
    sampler = RandomWalkMask(7, start="target", backend=backend)
    labels = torch.tensor([1, 4, 4])
    g1, g2 = gen(3), gen(3)
    masks = sampler.masks(model.linears, labels, g1)
    edges = sampler.walk([l.weight for l in model.linears], sampler.start_units(10, labels, g2), g2)
    for (weight_mask, bias_mask), (rows, cols) in zip(masks, edges):
        assert 1 <= int(weight_mask.sum()) <= 7
        expected_w = torch.zeros_like(weight_mask)
        expected_w[rows, cols] = True
        assert torch.equal(weight_mask, expected_w)
        assert set(bias_mask.nonzero().flatten().tolist()) == set(rows.tolist())


@pytest.mark.parametrize("backend", BACKENDS)
def test_target_starts_only_at_labels_in_the_batch(backend: str) -> None:
    model = mlp()
    labels = torch.tensor([3, 7, 7])
    starts = RandomWalkMask(500, start="target", backend=backend).start_units(10, labels, gen())
    assert set(starts.tolist()) == {3, 7}
    assert (starts == 7).float().mean().item() == pytest.approx(2 / 3, abs=0.07)  # a uniformly drawn sample's label
    rows, _ = RandomWalkMask(500, start="target", backend=backend).edges(model.linears, labels, gen())
    assert set(rows[-1].tolist()) == {3, 7}
    random = RandomWalkMask(500, start="random", backend=backend).start_units(10, torch.tensor([3]), gen())
    assert len(set(random.tolist())) == 10
    with pytest.raises(ValueError, match="labels"):
        RandomWalkMask(5, start="target", backend=backend).edges(model.linears, torch.tensor([], dtype=torch.long), gen())


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_masks(backend: str) -> None:
    model = mlp()
    a = RandomWalkMask(20, backend=backend).masks(model.linears, torch.arange(10), gen(1))
    b = RandomWalkMask(20, backend=backend).masks(model.linears, torch.arange(10), gen(1))
    c = RandomWalkMask(20, backend=backend).masks(model.linears, torch.arange(10), gen(2))
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert not all(torch.equal(x[0], y[0]) for x, y in zip(a, c))


@pytest.mark.parametrize("backend", BACKENDS)
def test_masked_gradients_are_zero_and_the_rest_equal_the_dense_gradients(backend: str) -> None:
    model = mlp()
    x, y = torch.randn(32, 1, 5, 5), torch.randint(0, 10, (32,))
    nn.functional.cross_entropy(model(x), y).backward()
    params = [p for lin in model.linears for p in (lin.weight, lin.bias)]
    dense = [p.grad.clone() for p in params]
    sampler = RandomWalkMask(30, backend=backend)
    rows, cols = sampler.edges(model.linears, y, gen())
    masks = [m for pair in edge_masks([lin.weight for lin in model.linears], rows, cols) for m in pair]
    assert [m.dtype for m in masks] == [torch.bool] * 6
    keep_edge_gradients(model.linears, rows, cols, backend=backend)  # what the callback does
    for p, d, m in zip(params, dense, masks):
        assert (p.grad[~m] == 0).all()
        assert torch.equal(p.grad[m], d[m])
    for p, d in zip(params, dense):
        p.grad = d.clone()
    mask_gradients(params, masks)  # the same gradients by multiplying with the masks
    for p, d, m in zip(params, dense, masks):
        assert (p.grad[~m] == 0).all() and torch.equal(p.grad[m], d[m])


def _reference_walk(scores: list[torch.Tensor], starts: torch.Tensor, uniforms: torch.Tensor, bias: str) -> list[list[int]]:
    """The walk of every path written out one path and layer at a time, in float64 (the definition)."""
    cols_per_layer = []
    rows = starts.tolist()
    for i, layer in enumerate(reversed(range(len(scores)))):
        score = scores[layer].double().abs()
        cols = []
        for p, r in enumerate(rows):
            u, n = float(uniforms[i, p]), score.shape[1]
            total = float(score[r].sum())
            if bias == "uniform" or not 0 < total < float("inf"):
                cols.append(min(int(u * n), n - 1))
                continue
            cdf = score[r].cumsum(0)
            cols.append(int((cdf <= u * total).sum()))  # the first column whose cumulative mass exceeds u * total
        cols_per_layer.append(cols)
        rows = cols
    return cols_per_layer[::-1]


@pytest.mark.parametrize("bias", ["weight", "uniform", "gradient"])
def test_both_backends_draw_the_columns_of_the_inverse_cdf_written_out(bias: str) -> None:
    # Widths 200 and 70: whole blocks of 64, groups of 8 and short last blocks; exact zeros, an all-zero
    # row and a row with a NaN (uniform fallback).
    torch.manual_seed(0)
    model = MLP((1, 10, 20), 10, (70, 30))
    for lin in model.linears:
        with torch.no_grad():
            lin.weight.mul_(torch.rand_like(lin.weight) > 0.3)
            lin.weight.grad = torch.randn_like(lin.weight) * (torch.rand_like(lin.weight) > 0.5)
    with torch.no_grad():
        model.linears[0].weight[5] = 0.0
        model.linears[1].weight[3, 7] = float("nan")
    scores = [lin.weight.grad if bias == "gradient" else lin.weight for lin in model.linears]
    labels = torch.randint(0, 10, (64,))
    edges = {}
    for backend in BACKENDS:
        edges[backend] = RandomWalkMask(3000, start="target", bias=bias, backend=backend).edges(model.linears, labels, gen(7))
    assert torch.equal(edges["torch"][0], edges["numba"][0]) and torch.equal(edges["torch"][1], edges["numba"][1])
    rows, cols = edges["numba"]
    uniforms = torch.rand(4, 3000, generator=gen(7))  # the numbers edges() drew: start picks, then each layer, top first
    starts = labels[(uniforms[0].double() * 64).long()]
    assert torch.equal(rows[-1], starts)
    reference = _reference_walk(scores, starts, uniforms[1:], bias)
    assert [c.tolist() for c in cols] == reference
    if bias != "uniform":  # zero entries are never drawn
        for score, r, c in zip(scores, rows, cols):
            finite_rows = torch.isfinite(score).all(1)[r] & (score.abs().sum(1)[r] > 0)
            assert (score[r, c][finite_rows] != 0).all()


def test_masks_of_both_backends_agree_and_whole_rows_keep_visited_rows() -> None:
    model = mlp()
    weights = [lin.weight for lin in model.linears]
    rows, cols = RandomWalkMask(40).edges(model.linears, torch.arange(10), gen(4))
    for whole_rows in (False, True):
        for dtype in (torch.bool, torch.float32):
            compiled = edge_masks(weights, rows, cols, whole_rows, dtype)
            on_meta = edge_masks([w.to("meta") for w in weights], rows.to("meta"), cols.to("meta"), whole_rows, dtype)
            assert all(w.device.type == "meta" for w, _ in on_meta)  # not on the CPU: tensor operations
            reference = []
            for w, r, c in zip(weights, rows, cols):
                bias_mask = torch.zeros(w.shape[0], dtype=dtype)
                bias_mask[r] = 1
                weight_mask = torch.zeros(w.shape, dtype=dtype)
                if whole_rows:
                    weight_mask[r] = 1
                else:
                    weight_mask[r, c] = 1
                reference.append((weight_mask, bias_mask))
            for (w, b), (rw, rb) in zip(compiled, reference):
                assert w.dtype == dtype and torch.equal(w, rw) and torch.equal(b, rb)


def test_keep_edge_gradients_without_biases_and_backend_options() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5, bias=False), nn.ReLU(), nn.Linear(5, 3, bias=False))
    linears = [model[0], model[2]]
    nn.functional.cross_entropy(model(torch.randn(8, 6)), torch.randint(0, 3, (8,))).backward()
    dense = [lin.weight.grad.clone() for lin in linears]
    rows, cols = RandomWalkMask(4, start="random").edges(linears, None, gen())
    keep_edge_gradients(linears, rows, cols)
    for lin, d, r, c in zip(linears, dense, rows, cols):
        expected = torch.zeros_like(d)
        expected[r, c] = d[r, c]
        assert torch.equal(lin.weight.grad, expected)
    with pytest.raises(ConfigError, match="backend='gpu'"):
        RandomWalkMask(5, backend="gpu")
    half = [nn.Linear(4, 3).half()]
    with pytest.raises(ValueError, match="backend=numba needs float32/float64"):
        RandomWalkMask(5, start="random", backend="numba").edges(half, None, gen())
    rows, cols = RandomWalkMask(5, start="random").edges(half, None, gen())  # auto: tensor operations
    assert rows.shape == cols.shape == (1, 5)


def test_a_model_that_is_not_a_linear_chain_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="rw_target.*SmallCNN.*model=mlp"):
        linear_chain(SmallCNN((1, 28, 28), 10), "rw_target")
    assert len(linear_chain(mlp())) == 3
    with pytest.raises(ConfigError, match="positive integer"):
        RandomWalkMask(0)
    with pytest.raises(ConfigError, match="start='middle'"):
        RandomWalkMask(5, start="middle")


def test_row_sparse_backward_matches_dense_on_all_rows_and_restricts_to_visited_rows() -> None:
    dense, sparse = mlp(1), mlp(1)
    layers = use_row_sparse_backward(sparse)
    assert len(layers) == 3 and all(isinstance(l, RowSparseLinear) for l in sparse.linears)
    assert sparse.state_dict().keys() == dense.state_dict().keys()
    x, y = torch.randn(16, 1, 5, 5), torch.randint(0, 10, (16,))
    for model in (dense, sparse):
        nn.functional.cross_entropy(model(x), y).backward()
    for a, b in zip(dense.parameters(), sparse.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6)

    # Visited rows: {0, 2} of the top layer, {5, 7} of the middle one, all of the first one. The reference is
    # dense autograd with the output gradient of every layer zeroed outside its visited rows.
    active = [None, torch.tensor([5, 7]), torch.tensor([0, 2])]
    for lin, rows in zip(sparse.linears, active):
        lin.active_rows = rows
    sparse.zero_grad()
    dense.zero_grad()
    nn.functional.cross_entropy(sparse(x), y).backward()
    h = x.flatten(1)
    for i, (lin, rows) in enumerate(zip(dense.linears, active)):
        z = lin(h)
        if rows is not None:
            keep = torch.zeros(z.shape[1], dtype=torch.bool)
            keep[rows] = True
            z.register_hook(lambda g, keep=keep: g * keep)
        h = torch.relu(z) if i < 2 else z
    nn.functional.cross_entropy(h, y).backward()
    for a, b in zip(dense.parameters(), sparse.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6)
    top, mid = sparse.linears[2], sparse.linears[1]
    assert (top.weight.grad[[1, 3, 4, 5, 6, 7, 8, 9]] == 0).all() and (top.bias.grad[[1, 3]] == 0).all()
    assert (mid.weight.grad[[r for r in range(12) if r not in (5, 7)]] == 0).all()
    assert top.weight.grad[[0, 2]].abs().sum() > 0


def test_density_and_cumulative_updates_on_a_hand_computed_case() -> None:
    module = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))  # 15 + 8 = 23 parameters
    stats = UpdateStats(changed_every_n_steps=1)
    stats.on_fit_start(None, module)
    stats.on_train_epoch_start(None, module)
    trainer = SimpleNamespace(logger=None, global_step=1)
    for nonzero_w0, nonzero_w1 in ((2, 1), (3, 2)):
        for p in module.parameters():
            p.grad = torch.zeros_like(p)
        module[0].weight.grad.view(-1)[:nonzero_w0] = 1.0
        module[1].weight.grad.view(-1)[:nonzero_w1] = 1.0
        module[1].bias.grad[0] = 1.0
        stats.on_before_optimizer_step(None, module, None)
        with torch.no_grad():
            module[0].weight.view(-1)[0] += 1.0  # the "optimizer" changes one parameter
        stats.on_train_batch_end(trainer, module, None, None, 0)
    stats.cumulative += float(stats._nonzero.sum())
    values = stats.epoch_values()
    assert values["updates/density"] == pytest.approx((4 + 6) / (23 * 2))
    assert values["updates/cumulative"] == 10
    assert values["updates/density/0"] == pytest.approx((2 + 3) / (15 * 2))
    assert values["updates/density/1"] == pytest.approx((2 + 3) / (8 * 2))
    assert values["updates/changed"] == pytest.approx(2 / (23 * 2))


def test_rows_x_fan_in_counts_each_visited_row_once_with_its_fan_in() -> None:
    """Hand-computed: layers 4->3 and 3->2; step 1 visits rows {0, 2} and {1}: 2 x 4 + 1 x 3 = 11;
    step 2 rows {1} (twice) and {0, 1}: 4 + 2 x 3 = 10. Per step 10.5, cumulative 21."""
    module = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    module.device = torch.device("cpu")  # as a LightningModule's
    mask = RandomWalkGradientMask(RandomWalkMask(paths=2, backend="torch"))
    mask.on_fit_start(None, module)
    mask.on_train_epoch_start(None, module)
    logged = {}
    module.log_dict = logged.update
    for rows in (([0, 2], [1, 1]), ([1, 1], [0, 1])):
        mask.edges = (torch.tensor(rows), torch.zeros(2, 2, dtype=torch.long))
        mask.on_train_batch_end(None, module, None, None, 0)
    mask.on_train_epoch_end(None, module)
    assert logged == {"updates/rows_x_fan_in": 10.5, "updates/cumulative_rows_x_fan_in": 21.0}
    mask.on_train_epoch_start(None, module)
    mask.on_train_batch_end(None, module, None, None, 0)  # the last walk again: 10 more
    mask.on_train_epoch_end(None, module)
    assert logged == {"updates/rows_x_fan_in": 10.0, "updates/cumulative_rows_x_fan_in": 31.0}


def metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("backward", ["dense", "rows"])
def test_rw_training_run_logs_density_bounded_by_the_paths(tmp_path: Path, backward: str) -> None:
    train(make_cfg(tmp_path, "method=rw_target", "paths=3", f"rw_backward={backward}", "model.hidden=[32,16]",
                   "method.callbacks.update_stats.changed_every_n_steps=1"))
    row = metrics(tmp_path)["epochs"][0]
    n_params = 784 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
    # per step: 3 paths x 3 layers edges (or whole rows) + at most 3 bias rows per layer
    per_step_max = 3 * 3 + 3 * 3 if backward == "dense" else 3 * (784 + 32 + 16) + 3 * 3
    assert 0 < row["updates/density"] <= per_step_max / n_params
    assert row["updates/cumulative"] == pytest.approx(row["updates/density"] * n_params * 7)
    assert row["updates/changed"] > row["updates/density"]  # Adam moves parameters with zero gradient
    assert {"updates/density/model.net.1", "updates/density/model.net.5"} <= row.keys()
    # the papers' count: 1 to 3 visited rows per layer, each with its fan-in
    assert 784 + 32 + 16 <= row["updates/rows_x_fan_in"] <= 3 * (784 + 32 + 16)
    assert row["updates/cumulative_rows_x_fan_in"] == pytest.approx(row["updates/rows_x_fan_in"] * 7)
    nonzero_per_step = row["updates/density"] * n_params
    if backward == "rows":  # whole rows: the nonzero weight gradients are at most those rows' (plus <= 9 biases)
        assert nonzero_per_step <= row["updates/rows_x_fan_in"] + 9
    else:
        assert nonzero_per_step < row["updates/rows_x_fan_in"]


def test_rw_runs_start_from_the_same_weights_as_full(tmp_path: Path) -> None:
    for method in ("full", "rw_random"):
        # lr=1e-30: the one step moves no weight by a representable amount, so the checkpoint holds the initial weights
        cfg = make_cfg(tmp_path / method, f"method={method}", "paths=2", "lr=1e-30", "+trainer.limit_train_batches=1")
        train(cfg)
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "rw_random" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # starts processes
def test_cnn_with_rw_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sparse_lab", "method=rw_target", "model=cnn", "data=synthetic", "hardware=cpu",
         f"hydra.run.dir={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 2 and "rw_target" in result.stderr and "SmallCNN" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_paths_sweep_gives_one_run_dir_per_point(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sparse_lab", "-m", "method=rw_target,rw_random", "paths=2,5", "data=synthetic",
         "hardware=cpu", "epochs=1", f"hydra.sweep.dir={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    dirs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(dirs) == 4
    seen = set()
    for d in dirs:
        text = (d / ".hydra" / "overrides.yaml").read_text()
        seen.add(tuple(sorted(l.strip("- ") for l in text.splitlines() if l.startswith("-"))))
        assert metrics(d)["status"] == "completed"
    assert len(seen) == 4
