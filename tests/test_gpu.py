"""Checks that need a CUDA GPU; skipped where torch sees none (CI has none). Where a GPU is lent:
``python -m pytest tests/test_gpu.py`` (docs/development.md).

- every method in ``conf/method/`` keeps its contract on the GPU (trains with finite losses, the
  pruned weights are zero, a run crashed in epoch 2 and resumed ends bit-identical), and the random
  walks' three backwards do too;
- the tensor path of the edge-sparse backward, which serves GPUs, gives the dense-then-mask gradients
  on every layer with the walk drawn on the GPU;
- SNIP, GraSP and SynFlow score the same on the GPU as on the CPU;
- ``sparse_kernels=true`` on a GPU keeps the dense kernels and trains the same net;
- a GPU-trained run exports and loads on the CPU with the masked model's outputs;
- SIGTERM in the epoch-end evaluation, then resume: the evaluation runs again, bit-identically.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from sparse_lab.app import train
from sparse_lab.export import export_run, load_sparse_model
from sparse_lab.models import MLP
from sparse_lab.sparsity import MaskSet, RandomWalkMask, keep_edge_gradients, scores, use_row_sparse_backward
from tests.conftest import make_cfg
from tests.helpers import final_state
from tests.test_faults import check_sigterm_in_the_epoch_end_evaluation
from tests.test_method_contract import METHODS, check_contract, overrides
from tests.test_walk_backward import assert_edges_run_ends_like_the_dense_run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

GPU = ["data=synthetic", "hardware=gpu", "trainer.deterministic=true", "epochs=1", "callbacks.progress_bar=null",
       "+trainer.enable_progress_bar=false"]


@pytest.mark.parametrize("method", METHODS)
def test_method_contract_on_the_gpu(tmp_path: Path, method: str) -> None:
    check_contract(tmp_path, [*GPU, *overrides(method)], fast=False)


@pytest.mark.parametrize("backward", ["edges", "rows"])
def test_random_walk_sparse_backwards_keep_the_contract_on_the_gpu(tmp_path: Path, backward: str) -> None:
    check_contract(tmp_path, [*GPU, *overrides("rw_target"), f"rw_backward={backward}"], fast=False)


def test_edges_run_on_the_gpu_ends_with_the_weights_of_the_dense_run(tmp_path: Path) -> None:
    assert_edges_run_ends_like_the_dense_run(tmp_path, *GPU, "method=rw_target", fast=False)


@pytest.mark.parametrize("start", ["random", "target"])
def test_edge_gradients_on_the_gpu_equal_dense_masked_gradients_on_every_layer(start: str) -> None:
    torch.manual_seed(0)
    dense = MLP((1, 5, 5), 10, (16, 12)).cuda()
    sparse = MLP((1, 5, 5), 10, (16, 12)).cuda()
    sparse.load_state_dict(dense.state_dict())
    use_row_sparse_backward(sparse)
    x, y = torch.randn(32, 1, 5, 5, device="cuda"), torch.randint(0, 10, (32,), device="cuda")
    rows, cols = RandomWalkMask(40, start=start).edges(dense.linears, y, torch.Generator("cuda").manual_seed(1))
    assert all(r.is_cuda and c.is_cuda for r, c in zip(rows, cols))
    nn.functional.cross_entropy(dense(x), y).backward()
    keep_edge_gradients(dense.linears, rows, cols, backend="torch")
    for lin, r, c in zip(sparse.linears, rows, cols):
        lin.active_edges = (r, c)
    nn.functional.cross_entropy(sparse(x), y).backward()
    for (name, a), b in zip(dense.named_parameters(), sparse.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name
        assert torch.equal(a.grad != 0, b.grad != 0), name
    assert all(int((lin.weight.grad != 0).sum()) > 0 for lin in dense.linears)


@pytest.mark.parametrize("score", [scores.snip, scores.grasp, scores.synflow])
def test_scores_on_the_gpu_equal_the_cpu_scores(score) -> None:
    torch.manual_seed(0)
    model = MLP((1, 6, 6), 10, (24, 16))
    batch = (torch.randn(40, 1, 6, 6), torch.arange(40) % 10)
    on_cpu = score(MaskSet(model), batch)
    on_gpu = score(MaskSet(model.cuda()), tuple(t.cuda() for t in batch))
    assert on_cpu.keys() == on_gpu.keys() and len(on_cpu) == 3
    for name, value in on_cpu.items():
        assert on_gpu[name].is_cuda
        scale = float(value.abs().max())
        assert scale > 0 and torch.allclose(on_gpu[name].cpu(), value, rtol=1e-4, atol=1e-5 * scale), name


def test_sparse_kernels_flag_on_the_gpu_trains_the_same_net_on_the_dense_kernels(tmp_path: Path) -> None:
    common = [*GPU, "method=snip", "sparsity=0.9", "model.hidden=[64,32]", "epochs=2", "+trainer.limit_train_batches=6"]
    states = {}
    for flag in ("false", "true"):
        final = train(make_cfg(tmp_path / flag, *common, f"sparse_kernels={flag}", fast=False))
        assert all(math.isfinite(v) for v in final.values())
        states[flag] = final_state(tmp_path / flag)
    for key, value in states["false"].items():
        assert torch.allclose(value, states["true"][key], atol=1e-5), key
        if key.endswith("weight"):
            assert torch.equal(value == 0, states["true"][key] == 0), key


def test_a_gpu_trained_run_exports_and_loads_on_the_cpu(tmp_path: Path) -> None:
    train(make_cfg(tmp_path, *GPU, "method=snip", "sparsity=0.95", "model.hidden=[64,32]", fast=False))
    loaded = load_sparse_model(export_run(tmp_path))
    state = {k.removeprefix("model."): v for k, v in final_state(tmp_path).items() if k.startswith("model.")}
    reference = MLP((1, 28, 28), 10, (64, 32))
    reference.load_state_dict(state)
    x = torch.randn(17, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(loaded(x), reference.eval()(x), atol=1e-5)


@pytest.mark.parametrize("where", ["test batch 2", "last training step"])
def test_sigterm_in_the_epoch_end_evaluation_on_the_gpu_resumes_bit_identically(tmp_path: Path, where: str) -> None:
    check_sigterm_in_the_epoch_end_evaluation(tmp_path, where, *GPU)  # its own epochs=3 comes later and wins
