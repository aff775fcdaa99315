"""Lightning's gradient clipping and accumulation, set on the Trainer as users know them, work with the
classifier methods (which otherwise optimize manually) and are refused up front where they cannot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sparse_lab.app import train
from sparse_lab.errors import ConfigError
from tests.conftest import make_cfg

TINY = ["data.train_size=64", "data.test_size=32", "data.val_size=0", "model.hidden=[16]"]
CLIP = 0.05


def run_with_probe(tmp_path: Path, *overrides: str) -> dict:
    train(make_cfg(tmp_path, *TINY, *overrides, "+callbacks.probe._target_=tests.helpers.GradNormProbe"))
    return json.loads((tmp_path / "grad_probe.json").read_text())


@pytest.mark.parametrize("method", ["full", "snip"])
def test_gradient_norm_clipping_bounds_every_step_after_masking(tmp_path: Path, method: str) -> None:
    probe = run_with_probe(tmp_path, f"method={method}", "sparsity=0.9", "batch_size=16", "epochs=2",
                           f"+trainer.gradient_clip_val={CLIP}")
    assert len(probe["norms"]) == 8
    assert all(n <= CLIP * (1 + 1e-4) for n in probe["norms"]), probe["norms"]
    # Clipped to exactly CLIP after the pruned gradients were removed: had the norm counted them, the
    # kept gradients' norm would fall below CLIP once they are masked.
    assert max(probe["norms"]) == pytest.approx(CLIP, rel=1e-4)
    if method == "snip":
        assert probe["pruned_grads_zero"] and all(probe["pruned_grads_zero"])


def test_no_clipping_without_the_option(tmp_path: Path) -> None:
    probe = run_with_probe(tmp_path, "method=full", "batch_size=16")
    assert max(probe["norms"]) > CLIP * 2  # the bound above is the option's doing


def test_accumulating_two_batches_equals_one_batch_twice_as_large(tmp_path: Path) -> None:
    sgd = ["method.module.optimizer._target_=torch.optim.SGD", "method.module.optimizer.fused=null", "lr=0.1"]
    train(make_cfg(tmp_path / "acc", *TINY, *sgd, "batch_size=16", "epochs=2", "+trainer.accumulate_grad_batches=2"))
    train(make_cfg(tmp_path / "big", *TINY, *sgd, "batch_size=32", "epochs=2"))

    def weights(run: Path) -> dict[str, torch.Tensor]:
        ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
        return ckpt["state_dict"] | {"global_step": torch.tensor(ckpt["global_step"])}

    acc, big = weights(tmp_path / "acc"), weights(tmp_path / "big")
    assert int(acc["global_step"]) == int(big["global_step"]) == 4  # 8 batches of 16 made 4 optimizer steps
    assert all(torch.allclose(acc[k].float(), big[k].float(), atol=1e-6) for k in big)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["method=rw_target", "+trainer.accumulate_grad_batches=2"], "cannot be used with the random-walk methods"),
        (["method=noprop_dt", "model=noprop_dt", "+trainer.gradient_clip_val=1.0"], "cannot be used with NoPropDT"),
        (["method=noprop_shared", "model=noprop_shared", "+trainer.accumulate_grad_batches=2"], "cannot be used with NoPropShared"),
        (["+trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches=0 is invalid"),
        (["+trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1 is invalid"),
        (["+trainer.gradient_clip_algorithm=median"], "trainer.gradient_clip_algorithm='median' is invalid"),
    ],
)
def test_options_a_method_cannot_honour_are_refused_before_training(tmp_path: Path, overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        train(make_cfg(tmp_path / "run", *overrides))
    assert not (tmp_path / "run").exists()


def test_rigl_moves_its_masks_once_per_optimizer_step_when_accumulating(tmp_path: Path) -> None:
    # 8 batches of 16, 2 per optimizer step: 4 steps; t_end = 0.75 x 4 = 3, so the masks move after
    # steps 1 and 2 only (once each, although two batches end on each step).
    train(make_cfg(tmp_path / "run", *TINY, "method=rigl", "sparsity=0.9", "batch_size=16", "epochs=2",
                   "method.callbacks.dynamic_sparsity.update_every=1", "+trainer.accumulate_grad_batches=2"))
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    state = ckpt["callbacks"]["DynamicSparsity"]
    assert ckpt["global_step"] == 4
    assert state["updates"] == 2 and state["moved_at"] == 2
    kept = sum(int(m.sum()) for m in state["masks"].values())
    total = sum(m.numel() for m in state["masks"].values())
    assert abs(kept / total - 0.1) < 0.01  # the density stayed where it was set
