"""Training on the sparse kernels (``sparse_kernels=true``): the same run as on dense kernels, masks
followed as they change, refused where it cannot serve."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from sparse_lab.app import train
from sparse_lab.errors import ConfigError
from sparse_lab.models import MLP
from sparse_lab.sparsity import MaskSet
from sparse_lab.sparsity.kernels import MaskedLinearKernels, SparseLinear
from tests.conftest import make_cfg
from tests.helpers import final_state

SMALL = ["model.hidden=[64,32]", "epochs=2", "+trainer.limit_train_batches=6", "+trainer.limit_test_batches=2"]


@pytest.mark.parametrize("method", [["method=snip", "sparsity=0.97"], ["method=progressive", "sparsity=0.95",
                                     "method.callbacks.pruner.schedule._target_=sparse_lab.sparsity.LinearExactSchedule"],
                                    ["method=set", "sparsity=0.95"],
                                    ["method=rigl", "sparsity=0.95", "method.callbacks.dynamic_sparsity.update_every=2"]])
def test_sparse_kernels_train_the_same_net_as_the_dense_kernels(tmp_path: Path, method: list[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The flag changes how the products are computed, not what is trained: the final weights agree
    within float tolerance, the masked weights stay zero, the checkpoint keys are the same."""
    runs = {}
    for flag in ("false", "true"):
        run_dir = tmp_path / flag
        calls = count_sparse_products(monkeypatch)
        train(make_cfg(run_dir, *SMALL, *method, f"sparse_kernels={flag}"))
        runs[flag] = final_state(run_dir)
        assert (len(calls) > 0) == (flag == "true")  # the flag on: the sparse kernels ran; off: they did not
    dense, sparse = runs["false"], runs["true"]
    assert dense.keys() == sparse.keys()
    for key in dense:
        assert torch.allclose(dense[key], sparse[key], atol=1e-4), key
        if key.endswith("weight"):
            assert torch.equal(dense[key] == 0, sparse[key] == 0), key


def test_the_layers_follow_the_masks_as_they_shrink_and_move() -> None:
    torch.manual_seed(0)
    model = MLP((1, 4, 4), 3, (20, 10))
    masks = MaskSet(model)
    kernels = MaskedLinearKernels(masks, dense_above=1.0)
    assert kernels.sync() and not kernels.sync()  # nothing changed the second time
    layers = [m for m in model.modules() if isinstance(m, SparseLinear)]
    assert len(layers) == 3 and model.linears == layers  # swapped in place, still the MLP's Linear layers
    params = dict(model.named_parameters())
    for step in range(3):
        new = {n: torch.rand(m.shape) < 0.3 for n, m in masks.masks.items()}  # masks that shrink and grow
        masks.update(new)
        kernels.sync()
        for name, mask in new.items():
            layer = model.get_submodule(name.rpartition(".")[0])
            assert torch.equal(layer.mask, mask) and layer.nnz == int(mask.sum())
            assert layer.weight is params[name]  # the MaskSet's and the optimizer's Parameter
        x = torch.randn(5, 16)
        out = model(x)
        reference = x
        for i, lin in enumerate(model.linears):
            reference = nn.functional.linear(reference, lin.weight * lin.mask, lin.bias)
            reference = reference.relu() if i < 2 else reference
        assert torch.allclose(out, reference, atol=1e-5)
        out.sum().backward()
        for name, mask in new.items():
            assert not params[name].grad[~mask].any()
            params[name].grad = None


def test_the_layers_give_dense_weight_gradients_while_the_maskset_keeps_them() -> None:
    """RigL's growth steps: with ``keep_dense_grads`` the weight gradient is the dense layer's
    (nonzero outside the mask), the output unchanged; without it, zero outside the mask again."""
    torch.manual_seed(0)
    model = MLP((1, 4, 4), 3, (20, 10))
    masks = MaskSet(model)
    masks.update({n: torch.rand(m.shape) < 0.3 for n, m in masks.masks.items()})
    dense = copy.deepcopy(model)
    kernels = MaskedLinearKernels(masks, dense_above=1.0)
    x = torch.randn(8, 16)
    for keep in (True, False):
        masks.keep_dense_grads = keep
        kernels.sync()
        out, reference = model(x), dense(x)
        assert torch.allclose(out, reference, atol=1e-5)
        out.sum().backward()
        reference.sum().backward()
        for name, mask in masks.masks.items():
            grad, expected = model.get_parameter(name).grad, dense.get_parameter(name).grad
            if keep:
                assert grad[~mask].abs().sum() > 0 and torch.allclose(grad, expected, atol=1e-5), name
            else:
                assert not grad[~mask].any() and torch.allclose(grad[mask], expected[mask], atol=1e-5), name
        model.zero_grad(set_to_none=True)
        dense.zero_grad(set_to_none=True)


@pytest.mark.parametrize(("overrides", "expected"), [
    (["method=full"], "needs a method that trains under pruning masks"),
    (["method=rw_target"], "needs a method that trains under pruning masks"),
    (["method=snip", "sparsity=0.9", "compile=true"], "cannot be combined with compile=true"),
    (["method=snip", "sparse_kernels=yes"], "sparse_kernels='yes' is invalid"),
])
def test_sparse_kernels_are_refused_where_they_cannot_serve(tmp_path: Path, overrides: list[str], expected: str) -> None:
    flag = [] if any(o.startswith("sparse_kernels=") for o in overrides) else ["sparse_kernels=true"]
    with pytest.raises(ConfigError, match=expected):
        train(make_cfg(tmp_path, *overrides, *flag))
    assert not (tmp_path / "checkpoints").exists()


def test_a_lottery_trains_its_rounds_on_the_sparse_kernels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Round 0 dense, round 1 at 5% density on the sparse kernels, then the control: the same
    record as with dense kernels."""
    overrides = ["method=lottery", "model.hidden=[64,32]", "method.protocol.rounds=2", "method.protocol.prune_percent=95",
                 "method.protocol.round_epoch_cap=2", "epochs=1", "+trainer.limit_train_batches=4", "+trainer.limit_test_batches=1"]
    records = {}
    for flag in ("false", "true"):
        calls = count_sparse_products(monkeypatch)
        train(make_cfg(tmp_path / flag, *overrides, f"sparse_kernels={flag}"))
        records[flag] = json.loads((tmp_path / flag / "lottery.json").read_text())
        assert (len(calls) > 0) == (flag == "true")
    dense, sparse = records["false"], records["true"]
    for a, b in zip([*dense["rounds"], dense["control"]], [*sparse["rounds"], sparse["control"]]):
        assert a["kept"] == b["kept"] and a["test/loss"] == pytest.approx(b["test/loss"], rel=1e-4)


def count_sparse_products(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that grows by one at every forward that runs on the sparse kernels."""
    calls: list[int] = []
    original = SparseLinear._sparse_forward
    monkeypatch.setattr(SparseLinear, "_sparse_forward", lambda self, *a: calls.append(1) or original(self, *a))
    return calls


@pytest.mark.parametrize("method", [["method=snip", "sparsity=0.97"], ["method=set", "sparsity=0.95"],
                                    ["method=rigl", "sparsity=0.95", "method.callbacks.dynamic_sparsity.update_every=3"]])
def test_a_run_on_the_sparse_kernels_resumes_bit_identical(tmp_path: Path, method: list[str]) -> None:
    from tests.helpers import SimulatedCrash
    from tests.test_method_contract import checkpoints, final_test

    common = [*SMALL, *method, "sparse_kernels=true"]
    train(make_cfg(tmp_path / "whole", *common))
    with pytest.raises(SimulatedCrash):
        train(make_cfg(tmp_path / "crashed", *common, "+callbacks.crash._target_=tests.helpers.CrashAtBatch",
                       "+callbacks.crash.epoch=1", "+callbacks.crash.batch=2"))
    train(make_cfg(tmp_path / "resumed", *common, f"resume={tmp_path / 'crashed'}"))
    whole, again = checkpoints(tmp_path / "whole"), checkpoints(tmp_path / "resumed")
    assert whole.keys() == again.keys()
    for name in whole:
        a, b = whole[name]["state_dict"], again[name]["state_dict"]
        assert [k for k in a if not torch.equal(a[k], b[k])] == [], name
    assert final_test(tmp_path / "resumed") == final_test(tmp_path / "whole")


def test_the_maskset_skips_masking_the_gradients_that_the_sparse_layers_left_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a sync, the MaskSet's pre-step masking leaves the sparse layers' weight gradients alone
    (they are zero outside the mask already) and the step keeps the pruned weights zero; once the
    masks change and until the next sync, or while the dense gradients are kept, it masks them all."""
    torch.manual_seed(0)
    model = MLP((1, 4, 4), 3, (20, 10))
    masks = MaskSet(model)
    masks.update({n: torch.rand(m.shape) < 0.3 for n, m in masks.masks.items()})
    kernels = MaskedLinearKernels(masks, dense_above=1.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    masks.attach([optimizer])
    multiplied: list[int] = []
    original = torch._foreach_mul_
    monkeypatch.setattr(torch, "_foreach_mul_", lambda tensors, others: (multiplied.append(len(tensors)), original(tensors, others))[1])
    x = torch.randn(8, 16)

    def step(sync: bool) -> None:
        multiplied.clear()
        if sync:
            kernels.sync()
        optimizer.zero_grad()
        model(x).sum().backward()
        optimizer.step()
        for name, mask in masks.masks.items():
            assert not model.get_parameter(name).grad[~mask].any() and not model.get_parameter(name)[~mask].any(), name

    step(sync=True)
    assert multiplied == []  # every masked parameter is a sparse layer's weight: nothing to multiply
    new = {n: m & (torch.rand(m.shape) < 0.9) for n, m in masks.masks.items()}
    masks.update(new)  # the layers still run on the old masks, which hold entries pruned now
    step(sync=False)
    assert multiplied == [3]
    masks.keep_dense_grads = True
    step(sync=True)
    assert multiplied == [3] and masks.dense_grads is not None
    assert any(g[~masks.masks[n]].any() for n, g in masks.dense_grads.items())  # the dense gradient, kept before masking
    masks.keep_dense_grads = False
    step(sync=True)
    assert multiplied == []


def test_the_kernels_load_before_the_first_training_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sparse_lab.callbacks import sparse_kernels

    prepared: list[torch.dtype] = []
    monkeypatch.setattr(sparse_kernels, "prepare", lambda dtype: prepared.append(dtype))
    train(make_cfg(tmp_path / "on", *SMALL, "method=snip", "sparse_kernels=true"))
    train(make_cfg(tmp_path / "off", *SMALL, "method=snip", "sparse_kernels=false"))
    assert prepared == [torch.float32]  # once, in the fit's setup, and only with the flag
    # in a fresh process: one step of a tiny float64 layer leaves the kernels such a layer trains on loaded
    script = ("import torch; from sparse_lab.sparsity.kernels import sparse_linear as s; s.prepare(torch.float64); "
              "print(*[len([g for g in getattr(s.compiled(), n).signatures if 'float64' in str(g)]) "
              "for n in ('_csr_matmul', '_csr_dots', '_transpose')])")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert all(int(n) >= 1 for n in out) and len(out) == 3, out
