"""Config composition: every group option composes and instantiates; knobs reach their targets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate

from sparse_lab.app import CONFIG_DIR, build_callbacks
from sparse_lab.errors import ConfigError
from sparse_lab.validation import validate
from tests.conftest import REPO, make_cfg


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


def test_every_group_has_options() -> None:
    assert set(options("method")) >= {"full"}
    assert set(options("data")) >= {"mnist", "fashion_mnist", "cifar10", "synthetic"}
    assert set(options("model")) >= {"mlp", "cnn"}
    assert set(options("hardware")) >= {"cpu", "gpu", "auto", "ddp_cpu", "ddp", "ddp_multinode"}


def test_defaults_are_the_reference_setting(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, fast=False)
    assert cfg.data._target_.endswith("MNISTDataModule") and "Fashion" not in cfg.data._target_
    assert cfg.model._target_.endswith("MLP") and list(cfg.model.hidden) == [256, 128]
    assert cfg.method.module.optimizer._target_ == "torch.optim.Adam"
    assert cfg.method.module.optimizer.lr == 1e-3
    assert cfg.data.batch_size == 128 and cfg.trainer.max_epochs == 5
    assert cfg.data.val_size == 0  # all 60,000 training images, as the reference


def test_short_knobs_interpolate(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "epochs=3", "batch_size=32", "lr=0.5", "seed=7")
    assert cfg.trainer.max_epochs == 3
    assert cfg.data.batch_size == 32
    assert cfg.method.module.optimizer.lr == 0.5
    assert cfg.data.seed == 7


@pytest.mark.parametrize("method", options("method"))
@pytest.mark.parametrize("model", options("model"))
def test_method_and_model_options_instantiate(tmp_path: Path, method: str, model: str) -> None:
    """Every compatible pair builds; a NoProp model or method paired with a foreign one is refused first."""
    cfg = make_cfg(tmp_path, f"method={method}", f"model={model}")
    owners = {"noprop_dt": "noprop_dt", "noprop_backprop": "noprop_dt", "noprop_shared": "noprop_shared",
              "noprop_shared_backprop": "noprop_shared"}  # fmt: skip
    if owners.get(method) != (model if model in owners.values() else None):
        with pytest.raises(ConfigError, match=r"needs its own model|is trained only by"):
            validate(cfg)
        return
    if method == "small_dense" and model not in ("mlp", "lenet300"):  # it scales an MLP's widths
        with pytest.raises(ConfigError, match="method.model_args.match_sparsity"):
            validate(cfg)
        return
    validate(cfg)
    dm = instantiate(cfg.data)
    net = instantiate(cfg.model, input_shape=dm.input_shape, num_classes=dm.num_classes, **(cfg.method.get("model_args") or {}))
    module = instantiate(cfg.method.module, model=net, num_classes=dm.num_classes)
    configured = module.configure_optimizers()
    optimizers = configured if isinstance(configured, (list, tuple)) else [configured]
    optimizers = [o["optimizer"] if isinstance(o, dict) else o for o in optimizers]
    trained = [p for o in optimizers for g in o.param_groups for p in g["params"]]
    own = {id(p) for p in module.parameters()}
    assert trained and all(id(p) in own for p in trained)  # the optimizers hold this module's parameters
    assert len({id(p) for p in trained}) == len(trained)  # each in one optimizer only
    entries = {**(cfg.get("callbacks") or {}), **(cfg.method.get("callbacks") or {})}
    declared = [entry._target_.rsplit(".", 1)[-1] for entry in entries.values() if entry is not None]
    assert [type(cb).__name__ for cb in build_callbacks(cfg)] == declared


@pytest.mark.parametrize("data", options("data"))
def test_data_options_instantiate(tmp_path: Path, data: str) -> None:
    cfg = make_cfg(tmp_path, f"data={data}")
    dm = instantiate(cfg.data)
    assert len(dm.input_shape) == 3 and dm.num_classes == 10
    assert dm.batch_size == cfg.batch_size


@pytest.mark.parametrize("hardware", [h for h in options("hardware") if not h.startswith("ddp")])
def test_hardware_options_compose(tmp_path: Path, hardware: str) -> None:
    """Single-device options; the data-parallel ones (ddp*) are tested in test_ddp.py."""
    cfg = make_cfg(tmp_path, f"hardware={hardware}")
    assert cfg.trainer.accelerator in {"cpu", "gpu", "auto"}
    assert cfg.trainer.devices == 1


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiment_presets_compose(tmp_path: Path, experiment: str) -> None:
    cfg = make_cfg(tmp_path, f"experiment={experiment}", fast=False)
    assert cfg.epochs >= 1 and cfg.method.module._target_


def test_mnist_full_preset_pins_the_reference(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "experiment=mnist_full", fast=False)
    assert (cfg.epochs, cfg.batch_size, cfg.lr) == (5, 128, 1e-3)
    assert cfg.data.val_size == 0 and cfg.data.eval_batch_size == 256


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sparse_lab", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # starts processes
def test_cli_prints_composed_config() -> None:
    result = run_cli("--cfg", "job", "paths=50")
    assert result.returncode == 0, result.stderr
    assert "paths: 50" in result.stdout and "max_epochs: ${epochs}" in result.stdout


@pytest.mark.slow  # starts processes
def test_cli_unknown_group_option_lists_choices() -> None:
    result = run_cli("method=nope", "--cfg", "job")
    assert result.returncode != 0
    assert "Could not find 'method/nope'" in result.stderr
    assert "full" in result.stderr  # the available options are listed
    assert "Traceback" not in result.stderr
