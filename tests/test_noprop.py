"""NoProp: schedules and inference coefficients, shapes, no gradient between blocks, no label leak
into evaluation, determinism, exact resume, and a short run of each of the four methods."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from sparse_lab.app import build, train
from sparse_lab.errors import ConfigError
from sparse_lab.methods import NoPropDT, NoPropDTBackprop, NoPropShared
from sparse_lab.models import CosineNoiseSchedule, LinearAlphaSchedule, NoPropDTModel, NoPropSharedModel
from tests.conftest import make_cfg
from tests.helpers import SimulatedCrash, epoch_rows

DT = ["method=noprop_dt", "model=noprop_dt", "model.width=0.125", "model.steps=3", "lr=1e-2"]
SHARED = ["method=noprop_shared", "model=noprop_shared", "model.steps=3"]


# ---- schedules ----
def test_cosine_schedule_against_hand_computed_values() -> None:
    s = CosineNoiseSchedule(2, offset=0.008, eta=0.1)
    ab1 = math.cos(math.pi / 2 * 0.508 / 1.008) ** 2  # t = 1 of T = 2
    ab2 = math.cos(math.pi / 2 * 0.008 / 1.008) ** 2
    assert s.alpha_bar.tolist() == pytest.approx([0.0, ab1, ab2], abs=1e-12)
    snr1, snr2 = ab1 / (1 - ab1), ab2 / (1 - ab2)
    assert s.snr.tolist() == pytest.approx([0.0, snr1, snr2])
    assert s.loss_weight.tolist() == pytest.approx([2 / 2 * 0.1 * snr1, 2 / 2 * 0.1 * (snr2 - snr1)])
    # t = 1: alpha_0 = alpha_bar_0 / alpha_bar_1 = 0, so a_1 = sqrt(ab1), b_1 = 0, c_1 = 1 - ab1
    alpha1 = ab1 / ab2  # t = 2: alpha_{t-1} = alpha_bar_1 / alpha_bar_2
    assert s.a.tolist() == pytest.approx([math.sqrt(ab1), math.sqrt(ab2) * (1 - alpha1) / (1 - ab1)])
    assert s.b.tolist() == pytest.approx([0.0, math.sqrt(alpha1) * (1 - ab2) / (1 - ab1)], abs=1e-12)
    assert s.c.tolist() == pytest.approx([1 - ab1, (1 - ab2) * (1 - alpha1) / (1 - ab1)])
    assert math.isfinite(float(s.snr[-1])) and float(s.snr[-1]) == pytest.approx(6.4e3, rel=0.01)


def test_inference_update_with_the_true_label_keeps_the_marginals() -> None:
    """If u_hat = u_y and z_{t-1} ~ q(z_{t-1}|y), then a u + b z + sqrt(c) eps ~ q(z_t|y) for every t."""
    s = CosineNoiseSchedule(10)
    for t in range(1, 11):
        mean = s.a[t - 1] + s.b[t - 1] * s.alpha_bar[t - 1].sqrt()  # coefficient of u_y
        var = s.b[t - 1] ** 2 * (1 - s.alpha_bar[t - 1]) + s.c[t - 1]
        assert float(mean) == pytest.approx(float(s.alpha_bar[t].sqrt()), rel=1e-9)
        assert float(var) == pytest.approx(float(1 - s.alpha_bar[t]), rel=1e-9)
    assert bool((s.loss_weight > 0).all()) and bool((s.alpha_bar[1:] > s.alpha_bar[:-1]).all())


def test_sample_and_kl() -> None:
    s = CosineNoiseSchedule(4)
    u = torch.eye(3)[torch.tensor([0, 1, 2] * 20000)]
    z = s.sample(u, 2, torch.Generator().manual_seed(0))
    assert float(z[u.bool()].mean()) == pytest.approx(float(s.alpha_bar[2].sqrt()), abs=0.01)
    assert float((z - s.alpha_bar[2].sqrt() * u).var()) == pytest.approx(float(1 - s.alpha_bar[2]), abs=0.01)
    assert float(s.kl_to_prior(u).abs().max()) == 0.0  # alpha_bar_0 = 0: q(z_0|y) is the prior


def test_linear_alpha_chain() -> None:
    s = LinearAlphaSchedule(10)
    assert s.alpha.tolist() == pytest.approx([1.0 - 0.1 * i for i in range(10)])
    u = torch.eye(10)[torch.arange(10).repeat(5000)]
    zs = s.chain(u, torch.Generator().manual_seed(0))
    assert zs.shape == (10, 50000, 10)
    assert torch.equal(zs[0], u)  # alpha_0 = 1: z_1 = u_y
    keep = torch.cumprod(s.alpha, 0)  # z_t = sqrt(prod alpha) u + noise of variance 1 - prod alpha
    assert float((zs[-1] - keep[-1].sqrt().float() * u).var()) == pytest.approx(float(1 - keep[-1]), abs=0.01)


# ---- models ----
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_model_shapes(shape: tuple[int, int, int]) -> None:
    x = torch.randn(5, *shape)
    dt = NoPropDTModel(shape, 10, steps=3, width=0.25, embedding="learned", embedding_dim=6).eval()
    assert dt.embed.shape == (10, 6) and dt.blocks[0](x, torch.randn(5, 6), dt.embed).shape == (5, 6)
    assert dt.predict_logits(x, runs=4).shape == (4, 5, 10)
    shared = NoPropSharedModel(shape, 10, steps=3).eval()
    assert shared.predict_logits(x, runs=2).shape == (2, 5, 10)
    with pytest.raises(ConfigError, match="model.embedding='random' is invalid"):
        NoPropDTModel(shape, 10, embedding="random")


def test_full_width_block_matches_the_paper() -> None:
    block = NoPropDTModel((1, 28, 28), 10, steps=1).blocks[0]
    convs = [m for m in block.image if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128]
    assert block.image[-2].in_features == 128 * 7 * 7 and block.image[-2].out_features == 256
    assert [m.out_features for m in block.fuse if isinstance(m, torch.nn.Linear)] == [256, 128, 10]


# ---- no gradient crosses blocks ----
def _fit_one_batch(module: L.LightningModule, x: torch.Tensor, y: torch.Tensor) -> None:
    torch.manual_seed(0)  # dropout
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=len(x)))


def _dt_module(cls: type, steps: int = 3, eval_runs: int = 2, **kwargs: object) -> L.LightningModule:
    torch.manual_seed(1)
    model = NoPropDTModel((1, 12, 12), 4, steps=steps, width=0.125, dropout=0.0)
    return cls(model, lambda p: torch.optim.AdamW(p, lr=1e-2), 4, eval_runs=eval_runs, **kwargs)


@pytest.mark.parametrize("cls, crosses", [(NoPropDT, False), (NoPropDTBackprop, True)])
def test_a_block_update_depends_only_on_its_own_loss(cls: type, crosses: bool) -> None:
    """Perturb every block but one: NoProp updates that block exactly as before; backprop does not."""
    x, y = torch.randn(16, 1, 12, 12), torch.arange(16) % 4
    a = _dt_module(cls)
    b = copy.deepcopy(a)
    with torch.no_grad():
        for s in (0, 2):
            for p in b.model.blocks[s].parameters():
                p.add_(0.5 * torch.randn_like(p))
    before = [p.clone() for p in a.model.blocks[1].parameters()]
    _fit_one_batch(a, x, y)
    _fit_one_batch(b, x, y)
    moved = [not torch.equal(p0, p) for p0, p in zip(before, a.model.blocks[1].parameters())]
    assert any(moved)
    same = all(torch.equal(p, q) for p, q in zip(a.model.blocks[1].parameters(), b.model.blocks[1].parameters()))
    assert same != crosses


@pytest.mark.parametrize("cls", [NoPropDT, NoPropShared])
def test_each_block_gets_exactly_one_gradient_per_step(cls: type) -> None:
    """Block / denoiser parameters receive a gradient only from their own loss, once per batch."""
    torch.manual_seed(0)
    if cls is NoPropDT:
        module = _dt_module(cls)
        blocks = module.model.blocks
    else:
        model = NoPropSharedModel((1, 12, 12), 4, steps=3, channels=(4,), features=8, hidden=8)
        module = cls(model, lambda p: torch.optim.Adam(p, lr=1e-2), 4, eval_runs=1)
        blocks = module.model.denoisers
    counts = [0] * len(blocks)
    for i, block in enumerate(blocks):
        for p in block.parameters():
            p.register_post_accumulate_grad_hook(lambda _p, i=i: counts.__setitem__(i, counts[i] + 1))
    _fit_one_batch(module, torch.randn(8, 1, 12, 12), torch.arange(8) % 4)
    n_params = len(list(blocks[0].parameters()))
    assert counts == [n_params] * len(blocks)
    # NoPropDT: one optimizer per block and the head's; NoPropShared: the encoder's, then all denoisers' at once
    steps_per_batch = len(blocks) + 1 if cls is NoPropDT else 2
    assert module.optimizer_steps == steps_per_batch and module.batches == 1


def test_shared_denoisers_update_as_with_one_optimizer_each() -> None:
    """One backward of the summed denoiser losses and one Adam step over all denoisers give
    bit for bit the seed comparison's loop: encoder through frozen denoisers, then per denoiser
    zero_grad, backward of its own loss, its own optimizer's step."""
    torch.manual_seed(0)
    model = NoPropSharedModel((1, 12, 12), 4, steps=3, channels=(4,), features=8, hidden=8)
    reference = copy.deepcopy(model)
    opt = lambda p: torch.optim.Adam(p, lr=1e-2)  # noqa: E731
    module = NoPropShared(model, opt, 4, eval_runs=1, seed=5)
    x, y = torch.randn(8, 1, 12, 12), torch.arange(8) % 4
    _fit_one_batch(module, x, y)

    encoder_opt = opt(reference.encoder.parameters())
    denoiser_opts = [opt(d.parameters()) for d in reference.denoisers]
    u = reference.targets(y)
    zs = reference.schedule.chain(u, torch.Generator().manual_seed(5))
    reference.denoisers.requires_grad_(False)
    features = reference.features(x)
    sum(F.mse_loss(reference.denoise(t, features, zs[t - 1]), u) for t in (1, 2, 3)).backward()
    encoder_opt.step()
    reference.denoisers.requires_grad_(True)
    with torch.no_grad():
        features = reference.features(x)
    for t, d_opt in enumerate(denoiser_opts, start=1):
        d_opt.zero_grad()
        F.mse_loss(reference.denoise(t, features, zs[t - 1]), u).backward()
        d_opt.step()
    for (name, p), q in zip(module.model.named_parameters(), reference.parameters()):
        assert torch.equal(p, q), name


def test_shared_inference_renoises_each_prediction() -> None:
    """renoise: z <- sqrt(alpha_t) u_hat_t + sqrt(1 - alpha_t) eps after every denoiser (alpha_1 = 1
    returns the last prediction as it is); chain: each prediction is the next input."""
    torch.manual_seed(0)
    model = NoPropSharedModel((1, 12, 12), 4, steps=3, channels=(4,), features=8, hidden=8).eval()
    x = torch.randn(5, 1, 12, 12)
    alpha = [1.0, 0.55, 0.1]  # linspace(1.0, 0.1, 3)
    with torch.no_grad():
        noise = torch.randn((4, 10, 4), generator=torch.Generator().manual_seed(1))
        f = model.features(x).repeat(2, 1)
        z = noise[0]
        for t in (3, 2, 1):
            z = math.sqrt(alpha[t - 1]) * model.denoise(t, f, z) + math.sqrt(1 - alpha[t - 1]) * noise[t]
        out = model.predict_logits(x, torch.Generator().manual_seed(1), runs=2)
        assert torch.allclose(out, z.reshape(2, 5, 4), atol=1e-6)
        model.inference = "chain"
        start = torch.randn((1, 10, 4), generator=torch.Generator().manual_seed(1))[0]
        chained = model.denoise(1, f, model.denoise(2, f, model.denoise(3, f, start)))
        assert torch.equal(model.predict_logits(x, torch.Generator().manual_seed(1), runs=2), chained.reshape(2, 5, 4))


def test_shared_encoder_is_the_seed_comparisons() -> None:
    model = NoPropSharedModel((1, 28, 28), 10)
    convs = [m for m in model.encoder if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.padding) for c in convs] == [(32, (0, 0)), (64, (0, 0))]
    fc = model.encoder[-1]
    assert isinstance(fc, torch.nn.Linear) and (fc.in_features, fc.out_features) == (1600, 128)  # 64 x 5 x 5
    assert model.features(torch.randn(2, 1, 28, 28)).shape == (2, 128)
    with pytest.raises(ConfigError, match="model.inference='mean' is invalid"):
        NoPropSharedModel((1, 28, 28), 10, inference="mean")


# ---- evaluation reads no labels ----
@pytest.mark.parametrize("kind", ["dt", "shared"])
def test_evaluation_ignores_the_labels(kind: str) -> None:
    torch.manual_seed(0)
    if kind == "dt":
        module = _dt_module(NoPropDT, eval_runs=3)
    else:
        model = NoPropSharedModel((1, 12, 12), 4, steps=3, channels=(4,), features=8, hidden=8)
        module = NoPropShared(model, lambda p: torch.optim.Adam(p, lr=1e-2), 4, eval_runs=3)
    x, y = torch.randn(64, 1, 12, 12), torch.arange(64) % 4
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)

    def test_acc(labels: torch.Tensor) -> tuple[float, float]:
        out = trainer.test(module, DataLoader(TensorDataset(x, labels), batch_size=16), verbose=False)[0]
        return out["test/acc"], out["test/acc_std"]

    module.eval()
    gen = torch.Generator().manual_seed(module.seed + 1)  # the evaluation's own noise (see _start_eval)
    with torch.no_grad():
        preds = torch.cat([module.predict(xb, gen) for xb in x.split(16)], dim=1)  # (runs, 64)
    for labels in (y, y[torch.randperm(64, generator=torch.Generator().manual_seed(3))], torch.zeros_like(y)):
        accs = (preds == labels).float().mean(dim=1)
        acc, std = test_acc(labels)
        assert acc == pytest.approx(float(accs.mean()), abs=1e-6)
        assert std == pytest.approx(float(accs.std()), abs=1e-6)


# ---- order=block ----
def test_block_order_trains_one_block_per_share_of_epochs(tmp_path: Path) -> None:
    module = _dt_module(NoPropDT, steps=2, order="block")
    x, y = torch.randn(32, 1, 12, 12), torch.arange(32) % 4
    start = [[p.clone() for p in b.parameters()] for b in module.model.blocks]
    seen: list[list[int]] = []

    class Spy(L.Callback):
        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: NoPropDT) -> None:
            seen.append(pl_module.active_blocks())
            if trainer.current_epoch == 1:  # after the first share (2 of 4 epochs): only block 1 moved
                moved = [any(not torch.equal(p0, p) for p0, p in zip(s, b.parameters())) for s, b in zip(start, pl_module.model.blocks)]
                assert moved == [True, False]

    trainer = L.Trainer(
        accelerator="cpu", max_epochs=4, logger=False, enable_checkpointing=False, callbacks=[Spy()],
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=16))
    assert seen == [[1], [1], [2], [2]]
    assert module.optimizer_steps == 4 * 2 * 2  # 8 batches, the active block's optimizer and the head's

    bad = _dt_module(NoPropDT, steps=2, order="block")
    trainer = L.Trainer(accelerator="cpu", max_epochs=3, logger=False, enable_progress_bar=False, limit_val_batches=0)
    with pytest.raises(ConfigError, match="multiple of 2"):
        trainer.fit(bad, DataLoader(TensorDataset(x, y), batch_size=16))


# ---- the app: four methods, compatibility, determinism, resume ----
@pytest.mark.parametrize(
    "overrides, steps_per_batch, min_acc",
    [
        (DT, 4, 0.3),
        (["method=noprop_backprop", *DT[1:]], 1, 0.3),
        (SHARED, 2, None),  # the encoder's step, then all denoisers' in one
        (["method=noprop_shared_backprop", *SHARED[1:]], 1, None),
        ([*DT, "model.embedding=learned", "model.embedding_dim=5"], 4, 0.3),
    ],
    ids=["noprop_dt", "noprop_backprop", "noprop_shared", "noprop_shared_backprop", "noprop_dt_learned"],
)
def test_short_synthetic_run(tmp_path: Path, overrides: list[str], steps_per_batch: int, min_acc: float | None) -> None:
    final = train(make_cfg(tmp_path, *overrides, "epochs=4", "method.module.eval_runs=3"))
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert record["test"]["test/acc"] == pytest.approx(final["test/acc"]) and "test/acc_std" in record["test"]
    first, last = record["epochs"][0], record["epochs"][-1]
    batches = 4 * 7  # 896 training images (1024 - 128 val) in batches of 128
    assert last["train/batches"] == batches and last["train/optimizer_steps"] == steps_per_batch * batches
    assert {f"train/block_mse/{t:02d}" for t in (1, 2, 3)} <= last.keys() and "val/acc" in last
    assert last["train/loss"] < first["train/loss"]
    if steps_per_batch > 1:  # NoProp: every block learns its own denoising (a twin may trade early blocks' for the total)
        assert all(last[f"train/block_mse/{t:02d}"] < first[f"train/block_mse/{t:02d}"] for t in (1, 2, 3))
    if min_acc is not None:  # the shared variant's 3-step inference chain swings from epoch to epoch on 28 batches
        assert final["test/acc"] > min_acc  # learnable synthetic data, 10 classes: chance is 0.1


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["method=noprop_dt", "model=mlp"], "model=noprop_dt"),
        (["method=noprop_shared_backprop", "model=noprop_dt"], "model=noprop_shared"),
        (["method=full", "model=noprop_dt"], "method=noprop_dt"),
        (["method=rw_target", "model=noprop_shared"], "method=noprop_shared"),
        ([*DT, "method.module.order=layer"], "order"),
        ([*DT, "method.module.eval_runs=0"], "eval_runs"),
        ([*DT, "model.width=0"], "model.width"),
        ([*DT, "model.embedding=random"], "model.embedding"),
        ([*SHARED, "model.inference=mean"], "model.inference"),
        ([*SHARED, "model.padding=-1"], "model.padding"),
    ],
)
def test_bad_noprop_configs_are_refused(tmp_path: Path, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        train(make_cfg(tmp_path / "run", *overrides))
    assert not (tmp_path / "run").exists()


def test_same_seed_same_run(tmp_path: Path) -> None:
    common = [*DT, "epochs=1", "model.dropout=0.2"]
    train(make_cfg(tmp_path / "a", *common))
    train(make_cfg(tmp_path / "b", *common))
    assert epoch_rows(tmp_path / "a") == epoch_rows(tmp_path / "b")


def test_resumed_noprop_run_equals_uninterrupted_run(tmp_path: Path) -> None:
    common = [*DT, "epochs=3", "data.val_size=0", "data.test_each_epoch=true"]
    train(make_cfg(tmp_path / "whole", *common))
    crashed = tmp_path / "crashed"
    with pytest.raises(SimulatedCrash):
        # 8 batches an epoch, 4 optimizer steps a batch: global_step 44 is batch 3 of epoch 1
        train(make_cfg(crashed, *common, "+callbacks.crash._target_=tests.helpers.CrashAtStep", "+callbacks.crash.step=44"))
    resumed = tmp_path / "resumed"
    train(make_cfg(resumed, *common, f"resume={crashed}"))
    whole = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    again = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert all(torch.equal(whole[k], again[k]) for k in whole)
    assert epoch_rows(resumed) == epoch_rows(tmp_path / "whole")


def test_presets_compose_for_both_twins(tmp_path: Path) -> None:
    for preset, methods, epochs in [
        ("noprop_mnist", ("noprop_dt", "noprop_backprop"), 100),
        ("noprop_cifar10", ("noprop_dt", "noprop_backprop"), 150),
        ("noprop_shared_mnist", ("noprop_shared", "noprop_shared_backprop"), 3),
    ]:
        for method in methods:
            cfg = make_cfg(tmp_path, f"experiment={preset}", f"method={method}", fast=False)
            assert cfg.epochs == epochs and cfg.method.module._target_.endswith(
                {"noprop_dt": "NoPropDT", "noprop_backprop": "NoPropDTBackprop", "noprop_shared": "NoPropShared",
                 "noprop_shared_backprop": "NoPropSharedBackprop"}[method]
            )  # fmt: skip
            model = build(cfg.model, input_shape=(1, 28, 28), num_classes=10)
            assert isinstance(model, NoPropSharedModel if "shared" in preset else NoPropDTModel)
    cfg = make_cfg(tmp_path, "experiment=noprop_mnist", fast=False)
    assert cfg.method.module.optimizer._target_ == "torch.optim.AdamW" and cfg.method.module.optimizer.weight_decay == 1e-3
    assert cfg.batch_size == 128 and cfg.lr == 1e-3
    cfg = make_cfg(tmp_path, "experiment=noprop_shared_mnist", fast=False)
    assert cfg.batch_size == 64 and cfg.method.module.optimizer._target_ == "torch.optim.Adam"
    assert make_cfg(tmp_path, "experiment=noprop_cifar10", fast=False).data.augment is False
