"""End-to-end training through the app: metrics.json, TensorBoard, checkpoints, determinism, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sparse_lab.app import train
from sparse_lab.methods import NonFiniteLossError
from tests.conftest import REPO, make_cfg
from tests.helpers import epoch_rows



def metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_training_learns_and_writes_metrics_per_epoch(tmp_path: Path) -> None:
    final = train(make_cfg(tmp_path, "epochs=2", "data.test_each_epoch=true"))
    record = metrics(tmp_path)
    assert record["status"] == "completed"
    assert [row["epoch"] for row in record["epochs"]] == [0, 1]
    row = record["epochs"][-1]
    for key in ("train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc", "train_time_s", "peak_rss_mb"):
        assert key in row, key
    assert row["step"] == 2 * 7  # 896 training images / batch 128, per epoch
    assert record["epochs"][1]["train/loss"] < record["epochs"][0]["train/loss"]
    assert record["test"]["test/acc"] == pytest.approx(final["test/acc"])
    assert final["test/acc"] > 0.9  # synthetic data are learnable
    assert record["peak_rss_mb"] > 0 and record["fit_time_s"] > 0


def test_run_dir_has_config_events_hparams_and_checkpoint(tmp_path: Path) -> None:
    train(make_cfg(tmp_path, "paths=37"))
    assert "paths: 37" in (tmp_path / "config_resolved.yaml").read_text()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "val/acc", "final/acc"} <= scalars
    assert events.PluginTagToContent("hparams")  # HPARAMS view: hyperparameters with final metrics
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert any(key.startswith("model.") for key in ckpt["state_dict"])


def test_same_seed_same_metrics_different_seed_different(tmp_path: Path) -> None:
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        train(make_cfg(tmp_path / name, f"seed={seed}", "epochs=2"))
        runs[name] = epoch_rows(tmp_path / name)
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]


def test_val_split_off_gives_no_val_metrics(tmp_path: Path) -> None:
    train(make_cfg(tmp_path, "data.val_size=0", "data.test_each_epoch=true"))
    row = metrics(tmp_path)["epochs"][0]
    assert "val/acc" not in row and "test/acc" in row


def test_scheduler_and_other_model_train(tmp_path: Path) -> None:
    cfg = make_cfg(
        tmp_path,
        "model=cnn",
        "data.shape=[3,32,32]",
        "+method.module.scheduler._target_=torch.optim.lr_scheduler.StepLR",
        "+method.module.scheduler._partial_=true",
        "+method.module.scheduler.step_size=1",
        "+method.module.scheduler.gamma=0.5",
        "epochs=2",
        "+callbacks.lr_monitor._target_=lightning.pytorch.callbacks.LearningRateMonitor",
        "+callbacks.lr_monitor.logging_interval=epoch",
    )
    train(cfg)
    record = metrics(tmp_path)
    assert record["status"] == "completed" and len(record["epochs"]) == 2
    # StepLR(step_size=1, gamma=0.5) stepped once per epoch: the second epoch trained at half the lr
    assert [row["lr-Adam"] for row in record["epochs"]] == pytest.approx([1e-3, 5e-4])


def test_non_finite_loss_stops_with_a_clear_error_and_keeps_metrics(tmp_path: Path) -> None:
    with pytest.raises(NonFiniteLossError, match="lr="):
        train(make_cfg(tmp_path, "lr=1e30", "epochs=3"))
    record = metrics(tmp_path)
    assert record["status"] == "failed" and "NonFiniteLossError" in record["error"]
    assert len(record["epochs"]) == 1


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sparse_lab", *args, "data=synthetic", "hardware=cpu", "epochs=1"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )


@pytest.mark.slow
def test_cli_single_run_writes_its_run_dir(tmp_path: Path) -> None:
    result = cli(f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert metrics(tmp_path)["status"] == "completed"
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert (tmp_path / ".hydra" / "config.yaml").exists() and (tmp_path / "run.log").exists()


@pytest.mark.slow
def test_cli_multirun_gives_one_run_dir_per_job(tmp_path: Path) -> None:
    result = cli("-m", "seed=0,1", f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    dirs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert [d.name for d in dirs] == ["0", "1"]
    seeds = [int(next(l for l in (d / "config_resolved.yaml").read_text().splitlines() if l.startswith("seed:")).split()[1]) for d in dirs]
    assert seeds == [0, 1]
    assert all(metrics(d)["status"] == "completed" for d in dirs)


@pytest.mark.slow
def test_cli_missing_data_is_one_clear_message(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sparse_lab", f"data.data_dir={tmp_path / 'nothing'}", "data.download=false",
         f"hydra.run.dir={tmp_path / 'run'}", "hardware=cpu"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 2
    assert "MNIST not found" in result.stderr and "train-images-idx3-ubyte.gz" in result.stderr
    assert "Traceback" not in result.stderr
    assert "MNIST not found" in (tmp_path / "run" / "error.txt").read_text()


@pytest.mark.real_data
def test_real_mnist_short_run(tmp_path: Path, real_data_dir: Path) -> None:
    cfg = make_cfg(
        tmp_path, "data=mnist", f"data.data_dir={real_data_dir}", "+trainer.limit_train_batches=100", "data.test_each_epoch=false"
    )
    final = train(cfg)
    assert final["test/acc"] > 0.88  # 100 steps of the reference MLP
    record = metrics(tmp_path)
    assert record["epochs"][0]["step"] == 100


@pytest.mark.real_data
def test_real_mnist_tensors_and_normalization(real_data_dir: Path) -> None:
    from sparse_lab.data import FashionMNISTDataModule, MNISTDataModule

    for cls in (MNISTDataModule, FashionMNISTDataModule):
        dm = cls(data_dir=str(real_data_dir), val_size=5000)
        dm.prepare_data()
        dm.setup()
        images, labels = dm.splits["train"]
        assert images.shape == (55000, 1, 28, 28) and images.dtype == torch.uint8
        assert dm.splits["val"][0].shape == (5000, 1, 28, 28)
        assert dm.splits["test"][0].shape == (10000, 1, 28, 28)
        x = dm.normalize(images.float())
        assert abs(x.mean().item()) < 0.01 and abs(x.std().item() - 1) < 0.01


def test_queued_metric_updates_give_the_per_step_metrics(tmp_path: Path) -> None:
    # batch 100 over 896 images: 8 steps an epoch, the last one short (96), so per-sample weighting matters
    rows = {}
    for every in (1, 3, 64):
        out = tmp_path / str(every)
        train(make_cfg(out, "epochs=2", "batch_size=100", "data.test_each_epoch=true", f"method.module.metric_update_every={every}"))
        rows[every] = metrics(out)
    for every in (3, 64):
        for row, ref in zip(rows[every]["epochs"], rows[1]["epochs"]):
            for key in ("train/acc", "val/acc", "test/acc"):
                assert row[key] == ref[key], (every, key)
            for key in ("train/loss", "val/loss", "test/loss"):
                assert row[key] == pytest.approx(ref[key], rel=1e-6), (every, key)
        assert rows[every]["test"] == pytest.approx(rows[1]["test"], rel=1e-6)


def test_metric_queue_is_bounded_and_bad_interval_refused() -> None:
    from sparse_lab.errors import ConfigError
    from sparse_lab.methods import Classifier
    from sparse_lab.models import MLP

    module = Classifier(MLP((4,), 3, (5,)), optimizer=torch.optim.SGD, num_classes=3, metric_update_every=4)
    x, y = torch.randn(10, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    lengths = []
    for _ in range(9):
        module._shared_step((x, y), "train")
        lengths.append(len(module._queued["train"]))
    assert lengths == [1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert module.train_acc.update_count == 2  # two updates of 4 steps each; one step still queued
    module._update_metrics("train")
    assert module.train_acc.update_count == 3 and module.train_loss.weight == 90  # every sample counted once
    with pytest.raises(ConfigError, match="metric_update_every"):
        Classifier(MLP((4,), 3, (5,)), optimizer=torch.optim.SGD, num_classes=3, metric_update_every=0)
