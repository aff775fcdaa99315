"""Data parallel training on the CPU (hardware=ddp_cpu: 2 processes, gloo, ddp_spawn).

The end-to-end tests run the app with a probe callback; under ddp_spawn each rank runs in its own
process, so the probe writes what it saw to ``rank<r>.pt`` and the test compares the ranks.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy
from torch import Tensor

from sparse_lab.app import train
from sparse_lab.callbacks import MaskEnforcer, RandomWalkGradientMask
from sparse_lab.data.loader import EpochPermutation, TensorBatchLoader
from sparse_lab.sparsity.kernels import SparseLinear
from tests.conftest import REPO, make_cfg

# Two ranks, small enough for a 2-core machine; noisy data so that test accuracy is not 1.
# 896 training samples (1024 - 128 val): 7 steps of 64 per rank; an odd test set (257) with
# eval batches of 64 makes the shards uneven (129 / 128) and their batch counts differ.
COMMON = ["model.hidden=[32,16]", "data.noise=0.8", "data.test_size=257", "data.eval_batch_size=64", "trainer.log_every_n_steps=1"]
DDP = ["hardware=ddp_cpu", "batch_size=64", *COMMON]


def digest(tensor: Tensor) -> str:
    """Exact fingerprint of a tensor's values."""
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


class DDPProbe(Callback):
    """Records, on every rank, what that rank saw and did, and saves it to ``out_dir/rank<r>.pt``."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.seen: dict[str, Any] = {"indices": [], "labels": [], "pre_grads": [], "post_grads": [], "rw_masks": [],
                                    "prune_masks": [], "masked_ok": [], "pre_nonzero": [], "post_nonzero": []}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loader = trainer.train_dataloader
        self.seen["indices"].append(loader.sampler.indices(torch.device("cpu")))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self.seen["labels"].append(batch[1].cpu())

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        # The probe is a run callback, so it runs before the method's callbacks: gradients after
        # DDP's all-reduce, before any mask.
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self.seen["pre_grads"].append([digest(g) for g in grads])
        self.seen["pre_nonzero"].append(sum(int(g.count_nonzero()) for g in grads))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self.seen["post_grads"].append([digest(g) for g in grads])
        self.seen["post_nonzero"].append(sum(int(g.count_nonzero()) for g in grads))
        walk = next((cb for cb in trainer.callbacks if isinstance(cb, RandomWalkGradientMask)), None)
        if walk is not None:
            self.seen["rw_masks"].append([digest(m) for pair in walk.masks for m in pair])
            ok = all(
                bool((lin.weight.grad * (1 - w_mask) == 0).all()) and bool((lin.bias.grad * (1 - b_mask) == 0).all())
                for lin, (w_mask, b_mask) in zip(walk.linears, walk.masks)
            )
            self.seen["masked_ok"].append(ok)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pruner = next((cb for cb in trainer.callbacks if isinstance(cb, MaskEnforcer)), None)  # Pruner, DynamicSparsity
        if pruner is not None:
            self.seen["prune_masks"].append([(digest(m), int(m.sum())) for m in pruner.masks.masks.values()])

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seen["weights"] = {k: digest(v) for k, v in pl_module.state_dict().items() if not k.startswith(("train_", "val_", "test_"))}
        self.seen["rank"], self.seen["world_size"] = trainer.global_rank, trainer.world_size
        self.seen["sparse_layers"] = sum(isinstance(m, SparseLinear) for m in pl_module.modules())
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(self.seen, self.out_dir / f"rank{trainer.global_rank}.pt")


def run_ddp(tmp_path: Path, *overrides: str) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Train with hardware=ddp_cpu and the probe; the final test metrics and each rank's record."""
    probe_dir = tmp_path / "probe"
    final = train(make_cfg(
        tmp_path / "run", *DDP, "+callbacks.probe._target_=tests.test_ddp.DDPProbe", f"+callbacks.probe.out_dir={probe_dir}",
        *overrides,
    ))
    ranks = [torch.load(probe_dir / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    return final, ranks


def full_set_metrics(run_dir: Path, *overrides: str) -> tuple[float, float]:
    """Accuracy and mean loss of the run's final checkpoint over the whole test split, in one process."""
    cfg = make_cfg(run_dir, *DDP, *overrides)
    dm = instantiate(cfg.data)
    dm.setup()
    model = instantiate(cfg.model, input_shape=dm.input_shape, num_classes=dm.num_classes)
    module = instantiate(cfg.method.module, model=model, num_classes=dm.num_classes)
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    module.load_state_dict(state)
    images, labels = dm.splits["test"]
    with torch.no_grad():
        logits = module(dm.normalize(images.float()))
    return float((logits.argmax(1) == labels).double().mean()), float(torch.nn.functional.cross_entropy(logits, labels))


# ---- the loader's sharding, without processes ----

@pytest.mark.parametrize("size", [10, 11, 13])
@pytest.mark.parametrize("uneven", ["pad", "drop", "split"])
def test_shards_partition_each_epoch_like_distributed_sampler(size: int, uneven: str) -> None:
    world = 4
    for epoch in (0, 1):
        shards = []
        for rank in range(world):
            sampler = EpochPermutation(size, seed=5, num_replicas=world, rank=rank, uneven=uneven)
            sampler.set_epoch(epoch)
            shards.append(sampler.indices(torch.device("cpu")))
        order = EpochPermutation(size, seed=5)
        order.set_epoch(epoch)
        full = order.indices(torch.device("cpu")).tolist()  # the one-process order: same on every rank
        seen = torch.cat(shards).tolist()
        if uneven == "pad":
            assert {len(s) for s in shards} == {math.ceil(size / world)}
            assert set(seen) == set(range(size))  # all covered; the first len - size of the order repeat
            assert sorted(seen) == sorted(full + full[: len(seen) - size])
        elif uneven == "drop":
            assert {len(s) for s in shards} == {size // world}
            assert len(set(seen)) == len(seen) and set(seen) == set(full[: len(seen)])  # disjoint, tail dropped
        else:
            assert max(map(len, shards)) - min(map(len, shards)) <= 1
            assert seen == full  # contiguous blocks, disjoint, everything exactly once
        if uneven != "split":  # strided like DistributedSampler: rank r holds positions r, r + R, ...
            padded = (full * 2)[: len(shards[0]) * world]
            for rank, shard in enumerate(shards):
                assert shard.tolist() == padded[rank::world]


def test_one_replica_is_the_unsharded_order() -> None:
    for uneven in ("pad", "drop", "split"):
        a = EpochPermutation(37, seed=2, num_replicas=1, uneven=uneven)
        assert torch.equal(a.indices(torch.device("cpu")), EpochPermutation(37, seed=2).indices(torch.device("cpu")))


def test_eval_shards_have_equal_batch_counts_and_cover_every_sample_once() -> None:
    images = torch.arange(257).view(257, 1, 1, 1)
    labels = torch.arange(257)
    for bs in (64, 100, 256, 300):
        loaders = [TensorBatchLoader(images, labels, bs, num_replicas=2, rank=r, uneven="split") for r in range(2)]
        batches = [[y for _, y in loader] for loader in loaders]
        assert len(batches[0]) == len(batches[1]) == len(loaders[0])  # same count: DDP collectives stay matched
        assert all(0 < len(y) <= bs for b in batches for y in b)
        assert torch.cat([y for b in batches for y in b]).tolist() == list(range(257))
        for loader in loaders:
            for x, y in loader:
                assert torch.equal(x.flatten().long(), y)  # images and labels stay paired
    with pytest.raises(ValueError, match="cannot be split"):
        TensorBatchLoader(images[:3], labels[:3], 1, num_replicas=2, rank=0, uneven="split")


def test_training_shards_are_disjoint_and_cover_the_epoch() -> None:
    images = torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1)
    labels = torch.arange(100)
    loaders = [TensorBatchLoader(images, labels, 8, shuffle=True, seed=1, num_replicas=2, rank=r) for r in range(2)]
    for epoch in (0, 1):
        for loader in loaders:
            loader.sampler.set_epoch(epoch)
        seen = [torch.cat([y for _, y in loader]) for loader in loaders]
        assert len(loaders[0]) == len(loaders[1]) == 7 and len(seen[0]) == len(seen[1]) == 50
        assert not set(seen[0].tolist()) & set(seen[1].tolist())
        assert sorted(torch.cat(seen).tolist()) == list(range(100))
        for loader in loaders:
            for x, y in loader:
                assert torch.equal(x.flatten().long(), y)


def test_datamodule_shards_by_the_trainers_rank(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, *DDP)
    dm = instantiate(cfg.data)

    class FakeTrainer:
        distributed_sampler_kwargs = {"num_replicas": 2, "rank": 1}
        strategy = type("S", (), {"root_device": torch.device("cpu")})()

    dm.trainer = FakeTrainer()  # type: ignore[assignment]
    train_loader, test_loader = dm.train_dataloader(), dm.test_dataloader()
    assert (train_loader.sampler.num_replicas, train_loader.sampler.rank, train_loader.sampler.uneven) == (2, 1, "pad")
    assert (test_loader.sampler.num_replicas, test_loader.sampler.rank, test_loader.sampler.uneven) == (2, 1, "split")
    assert sum(len(y) for _, y in test_loader) == 128  # rank 1's half of 257


# ---- hardware configs ----

def test_hardware_configs_compose_to_the_documented_trainer(tmp_path: Path) -> None:
    cpu = make_cfg(tmp_path, "hardware=ddp_cpu").trainer
    assert (cpu.accelerator, cpu.devices, cpu.num_nodes) == ("cpu", 2, 1)
    assert cpu.strategy.start_method == "spawn" and cpu.strategy.process_group_backend == "gloo"
    gpu = make_cfg(tmp_path, "hardware=ddp", "trainer.devices=4").trainer
    assert (gpu.accelerator, gpu.devices, gpu.num_nodes) == ("gpu", 4, 1)
    assert gpu.strategy.start_method == "spawn" and gpu.strategy.process_group_backend == "nccl"
    assert make_cfg(tmp_path, "hardware=ddp").trainer.devices == -1  # all visible GPUs
    nodes = make_cfg(tmp_path, "hardware=ddp_multinode", "trainer.num_nodes=3", "trainer.devices=8").trainer
    assert (nodes.accelerator, nodes.devices, nodes.num_nodes) == ("gpu", 8, 3)
    assert nodes.strategy.get("start_method", "popen") == "popen" and nodes.strategy.process_group_backend == "nccl"
    for trainer_cfg, start in ((gpu, "spawn"), (nodes, "popen")):
        strategy = instantiate(trainer_cfg.strategy)
        assert isinstance(strategy, DDPStrategy) and strategy._start_method == start


def test_ddp_cpu_builds_a_two_process_spawn_trainer(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "hardware=ddp_cpu")
    trainer = instantiate(cfg.trainer, logger=False)
    strategy = trainer.strategy
    assert isinstance(strategy, DDPStrategy) and strategy.num_processes == 2 and strategy.num_nodes == 1
    assert strategy.process_group_backend == "gloo" and type(strategy.launcher).__name__ == "_MultiProcessingLauncher"
    assert strategy.launcher._start_method == "spawn"
    assert trainer.distributed_sampler_kwargs == {"num_replicas": 2, "rank": 0}


# ---- end to end, 2 processes ----

@pytest.mark.slow  # starts processes
def test_full_weights_agree_and_test_metrics_are_the_whole_test_set(tmp_path: Path) -> None:
    final, ranks = run_ddp(tmp_path, "method=full")
    # (a) identical weights on both ranks at the end of training, and in the saved checkpoint
    assert ranks[0]["weights"] == ranks[1]["weights"]
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert {k: digest(ckpt[k]) for k in ranks[0]["weights"]} == ranks[0]["weights"]
    # 2 ranks x 64 train like one process with batches of 128: the strided shards make each global
    # batch the same 128 samples, and DDP averages the two halves' gradients
    train(make_cfg(tmp_path / "single", "batch_size=128", *COMMON, "logger=null"))  # FAST: hardware=cpu
    single = torch.load(tmp_path / "single" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    for key in ranks[0]["weights"]:
        torch.testing.assert_close(ckpt[key], single[key], rtol=0, atol=1e-5)
    # the gradients seen at the optimizer step are already all-reduced: equal on both ranks
    assert ranks[0]["pre_grads"] == ranks[1]["pre_grads"]
    assert ranks[0]["labels"][0].tolist() != ranks[1]["labels"][0].tolist()  # although their batches differ
    # (d) each epoch's training shards are disjoint and together cover the 896 training samples
    for a, b in zip(ranks[0]["indices"], ranks[1]["indices"]):
        assert len(a) == len(b) == 448 and not set(a.tolist()) & set(b.tolist())
        assert sorted(torch.cat([a, b]).tolist()) == list(range(896))
    # (e) the test metrics (reduced over the 129 / 128 shards) are those of the whole test set
    acc, loss = full_set_metrics(tmp_path / "run", "method=full")
    assert 0.2 < acc < 0.99  # not a trivial 1.0 that any reduction would give
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert final["test/acc"] == pytest.approx(acc, abs=1e-7) and record["test"]["test/acc"] == pytest.approx(acc, abs=1e-7)
    assert final["test/loss"] == pytest.approx(loss, rel=1e-5)
    # metrics.json is written once (rank 0), keeps the fit's epoch rows through the test's processes
    assert record["status"] == "completed" and [row["epoch"] for row in record["epochs"]] == [0]
    assert not list((tmp_path / "run").glob("*.tmp"))


@pytest.mark.slow  # starts processes
def test_random_walk_masks_and_weights_agree_on_every_rank(tmp_path: Path) -> None:
    final, ranks = run_ddp(tmp_path, "method=rw_target", "paths=20")
    steps = len(ranks[0]["rw_masks"])
    assert steps == 7 and len(ranks[1]["rw_masks"]) == steps
    # (b) the same walk on both ranks at every step, although each rank's batch labels differ
    assert ranks[0]["rw_masks"] == ranks[1]["rw_masks"]
    assert len({tuple(m) for m in ranks[0]["rw_masks"]}) == steps  # a new walk every step
    # masking happens after the all-reduce: the gradients before masking are already equal and dense,
    # after masking equal, zero outside the mask and far sparser
    assert ranks[0]["pre_grads"] == ranks[1]["pre_grads"] and ranks[0]["post_grads"] == ranks[1]["post_grads"]
    assert all(ranks[0]["masked_ok"]) and all(ranks[1]["masked_ok"])
    assert all(post < pre / 10 for pre, post in zip(ranks[0]["pre_nonzero"], ranks[0]["post_nonzero"]))
    # (a) identical weights after training
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert 0 < final["test/acc"] <= 1


@pytest.mark.slow  # starts processes
def test_progressive_pruning_masks_agree_on_every_rank(tmp_path: Path) -> None:
    final, ranks = run_ddp(tmp_path, "method=progressive", "sparsity=0.6", "epochs=2")
    # (c) the same masks after every pruning step, at the schedule's levels (0, then 30%)
    assert ranks[0]["prune_masks"] == ranks[1]["prune_masks"] and len(ranks[0]["prune_masks"]) == 2
    n = 784 * 32 + 32 * 16 + 16 * 10
    assert [sum(kept for _, kept in epoch) for epoch in ranks[0]["prune_masks"]] == [n, round(0.7 * n)]
    assert ranks[0]["weights"] == ranks[1]["weights"]
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["epochs"][-1]["sparsity/global"] == pytest.approx(0.3, abs=1e-4)
    # the test ran on the pruned, trained weights, which ddp_spawn hands back to the main process
    acc, _ = full_set_metrics(tmp_path / "run", "method=progressive", "sparsity=0.6", "epochs=2")
    assert final["test/acc"] == pytest.approx(acc, abs=1e-7) and acc > 0.2


@pytest.mark.slow  # starts processes
@pytest.mark.parametrize("kernels", ["false", "true"])
def test_dynamic_sparse_masks_agree_on_every_rank_after_updates(tmp_path: Path, kernels: str) -> None:
    """RigL, also on the sparse kernels (whose growth steps run on the dense kernels): the ranks
    keep the same masks and weights."""
    final, ranks = run_ddp(tmp_path, "method=rigl", "sparsity=0.8", "epochs=2", "method.callbacks.dynamic_sparsity.update_every=2",
                           f"sparse_kernels={kernels}", "+callbacks.sparse_kernels.dense_above=1")
    assert ranks[0]["prune_masks"] == ranks[1]["prune_masks"] and len(ranks[0]["prune_masks"]) == 2
    assert ranks[0]["prune_masks"][0] != ranks[0]["prune_masks"][1]  # the masks moved between the epochs' ends
    assert ranks[0]["weights"] == ranks[1]["weights"] and 0 < final["test/acc"] <= 1
    assert [r["sparse_layers"] for r in ranks] == ([3, 3] if kernels == "true" else [0, 0])


@pytest.mark.slow
def test_cli_multirun_job_trains_on_two_processes(tmp_path: Path) -> None:
    """ddp_spawn inside a Hydra multirun job, through ``python -m sparse_lab`` (Lightning's script-relaunching
    ``ddp`` would re-run the sweep in every extra process)."""
    probe_dir = tmp_path / "probe"
    result = subprocess.run(
        [sys.executable, "-m", "sparse_lab", "-m", "seed=3", f"hydra.sweep.dir={tmp_path / 'sweep'}", "data=synthetic",
         "epochs=1", "callbacks.progress_bar=null", "+trainer.enable_progress_bar=false", *DDP,
         "+callbacks.probe._target_=tests.test_ddp.DDPProbe", f"+callbacks.probe.out_dir={probe_dir}"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir()) == ["0"]  # one job, run once
    record = json.loads((tmp_path / "sweep" / "0" / "metrics.json").read_text())
    assert record["status"] == "completed" and len(record["epochs"]) == 1 and 0 < record["test"]["test/acc"] <= 1
    ranks = [torch.load(probe_dir / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert [(r["rank"], r["world_size"]) for r in ranks] == [(0, 2), (1, 2)] and ranks[0]["weights"] == ranks[1]["weights"]
