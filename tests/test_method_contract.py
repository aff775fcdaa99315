"""The contract every method YAML in ``conf/method/`` keeps, checked for each one found there (a new
method gets these checks without a line of test code):

- it composes and trains on synthetic data with a finite loss, and writes a completed run record;
- a run killed in its second epoch and resumed with ``resume=RUN_DIR`` ends bit-identical to the
  uninterrupted run (every ``last.ckpt`` under the run dir, and the final test metrics);
- for a method that keeps masks, the weights its masks prune are exactly zero in the final checkpoint;
- every other model in ``conf/model/`` either trains under it for two steps or is refused before
  training with one clear :class:`~sparse_lab.errors.SparseLabError` (never a traceback from inside the fit).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from sparse_lab.app import CONFIG_DIR, train
from sparse_lab.errors import SparseLabError
from tests.conftest import make_cfg
from tests.helpers import SimulatedCrash

METHODS = sorted(p.stem for p in (Path(CONFIG_DIR) / "method").glob("*.yaml"))
# Every model but the MLP ones (mlp, lenet300: the class the first test trains every method with).
MODELS = sorted(p.stem for p in (Path(CONFIG_DIR) / "model").glob("*.yaml") if p.stem not in ("mlp", "lenet300"))

# 32 training samples in batches of 16: 2 batches an epoch; the crash is at the second epoch's second batch.
TINY = ["data.train_size=32", "data.test_size=32", "data.val_size=0", "batch_size=16", "epochs=2", "sparsity=0.5", "paths=10"]
# Small settings for the methods whose defaults would not fit (or not act) in 4 steps.
PER_METHOD: dict[str, list[str]] = {
    "rigl": ["method.callbacks.dynamic_sparsity.update_every=1"],
    "lottery": ["method.protocol.rounds=2", "method.protocol.round_epoch_cap=2", "target_acc=null"],
    "imp": ["method.protocol.rounds=2"],
    "oneshot": ["method.protocol.percents=[0,50]"],
    "noprop_dt": ["model=noprop_dt", "model.width=0.125", "model.steps=2", "method.module.eval_runs=1"],
    "noprop_backprop": ["model=noprop_dt", "model.width=0.125", "model.steps=2", "method.module.eval_runs=1"],
    "noprop_shared": ["model=noprop_shared", "model.steps=2", "model.channels=[4,8]", "model.features=16", "model.hidden=16",
                      "method.module.eval_runs=1"],
    "noprop_shared_backprop": ["model=noprop_shared", "model.steps=2", "model.channels=[4,8]", "model.features=16",
                               "model.hidden=16", "method.module.eval_runs=1"],
}
# Small versions of each model, for the method x model check.
MODEL_SIZES: dict[str, list[str]] = {
    "cnn": ["model.channels=[4,8]", "model.hidden=16"],
    "resnet18": ["model.width=2"],
    "noprop_dt": ["model.width=0.125", "model.steps=2"],
    "noprop_shared": ["model.steps=2", "model.channels=[4,8]", "model.features=16", "model.hidden=16"],
}
MASK_STATES = ("Pruner", "DynamicSparsity", "MaskEnforcer")


def overrides(method: str) -> list[str]:
    own = PER_METHOD.get(method, [])
    model = [] if any(o.startswith("model=") for o in own) else ["model.hidden=[16]"]
    return [f"method={method}", *TINY, *model, *own]


def checkpoints(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Every ``last.ckpt`` below ``run``, by its path relative to ``run``."""
    return {
        str(p.relative_to(run)): torch.load(p, weights_only=False)
        for p in sorted(run.rglob("last.ckpt"))
    }


def final_test(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text()).get("test", {})


@pytest.mark.parametrize("method", METHODS)
def test_method_trains_resumes_bit_identical_and_keeps_its_masks(tmp_path: Path, method: str) -> None:
    check_contract(tmp_path, overrides(method))


def check_contract(tmp_path: Path, common: list[str], fast: bool = True) -> None:
    """Train, check the run record and the masked zeros, crash in epoch 2, resume, compare bit for bit.
    ``fast=False``: ``common`` chooses data and hardware itself (the GPU tests)."""
    cfg = make_cfg(tmp_path / "whole", *common, fast=fast)
    masking = bool({"pruner", "dynamic_sparsity"} & set(cfg.method.get("callbacks") or {})) or \
        "LotteryTicket" in str((cfg.method.get("protocol") or {}).get("_target_"))
    final = train(cfg)
    assert final and all(math.isfinite(v) for v in final.values()), final

    record = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert "test" in record and math.isfinite(record["test"]["test/acc"])
    rows = record.get("epochs") or []
    losses = [row["train/loss"] for row in rows if "train/loss" in row]
    assert all(math.isfinite(v) for v in losses)

    whole = checkpoints(tmp_path / "whole")
    assert whole, "no last.ckpt was written"
    checked = 0
    for name, ckpt in whole.items():
        state = ckpt["state_dict"]
        for callback in MASK_STATES:
            masks = ckpt.get("callbacks", {}).get(callback, {}).get("masks") or {}
            for param, mask in masks.items():
                weight = state[f"model.{param}"]
                assert not weight[~mask.bool()].any(), f"{name}: {callback} pruned entries of {param} are not zero"
                checked += int((~mask.bool()).sum())
    assert (checked > 0) == masking, f"{checked} pruned entries checked; a masking method: {masking}"

    crashed = tmp_path / "crashed"
    with pytest.raises(SimulatedCrash):
        train(make_cfg(crashed, *common, "+callbacks.crash._target_=tests.helpers.CrashAtBatch", "+callbacks.crash.epoch=1",
                       "+callbacks.crash.batch=1", fast=fast))
    resumed = tmp_path / "resumed"
    train(make_cfg(resumed, *common, f"resume={crashed}", fast=fast))

    again = checkpoints(resumed)
    assert again.keys() == whole.keys()
    for name in whole:
        a, b = whole[name]["state_dict"], again[name]["state_dict"]
        assert a.keys() == b.keys()
        changed = [k for k in a if not torch.equal(a[k], b[k])]
        assert not changed, f"{name}: resumed run differs in {changed}"
    assert final_test(resumed) == final_test(tmp_path / "whole")


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("method", METHODS)
def test_every_model_trains_or_is_refused_clearly(tmp_path: Path, method: str, model: str) -> None:
    own = [o for o in PER_METHOD.get(method, []) if not o.startswith("model")]
    cfg = make_cfg(tmp_path, f"method={method}", f"model={model}", *TINY, *MODEL_SIZES.get(model, []), *own,
                   "epochs=1", "+trainer.limit_train_batches=2")
    try:
        final = train(cfg)
    except SparseLabError as exc:
        message = str(exc)
        assert "\n" not in message.strip() or message.startswith("invalid config:"), message
        assert not (tmp_path / "checkpoints").exists(), "refused after training started"
        return
    assert final and all(math.isfinite(v) for v in final.values()), final
