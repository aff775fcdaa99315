"""Bad input is refused before anything is built or written, with a message that names the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

import torch

import sparse_lab.methods
from sparse_lab.app import train
from sparse_lab.callbacks import DynamicSparsity, Pruner, RandomWalkGradientMask, TimedProgressBar
from sparse_lab.errors import ConfigError
from sparse_lab.methods import Classifier, NoPropDT, NoPropDTBackprop, NoPropShared, NoPropSharedBackprop
from sparse_lab.models import MLP, NoPropDTModel, NoPropSharedModel
from sparse_lab.sparsity import LinearEpochSchedule, RandomWalkMask
from sparse_lab.validation import dedicated_models, validate
from tests.conftest import REPO, make_cfg

BAD_INPUTS = [
    (["epochs=0"], "epochs=0 is invalid: it must be an integer >= 1"),
    (["epochs=2.5"], "epochs=2.5 is invalid"),
    (["batch_size=-1"], "batch_size=-1 is invalid"),
    (["lr=0"], "lr=0 is invalid: it must be a number > 0"),
    (["lr=fast"], "lr='fast' is invalid"),
    (["seed=-3"], "seed=-3 is invalid: it must be a non-negative integer"),
    (["paths=0"], "paths=0 is invalid: it must be a positive integer"),
    (["paths=1.5"], "paths=1.5 is invalid"),
    (["sparsity=1.0"], "sparsity=1.0 is invalid: it must be a number in [0, 1)"),
    (["sparsity=-0.1"], "sparsity=-0.1 is invalid"),
    (["rw_backward=sideways"], "rw_backward='sideways' is invalid: it must be one of: dense, rows"),
    (["data.val_size=-5"], "data.val_size=-5 is invalid"),
    (["data.eval_batch_size=0"], "data.eval_batch_size=0 is invalid"),
    (["data.test_each_epoch=maybe"], "data.test_each_epoch='maybe' is invalid: it must be true or false"),
    (["model.hidden=[0,10]"], "model.hidden=[0, 10] is invalid: it must be a positive integer or a list of them"),
    (["model.hidden=wide"], "model.hidden='wide' is invalid"),
    (["method.module.label_smoothing=1.5"], "method.module.label_smoothing=1.5 is invalid"),
    (["method=rw_target", "model=cnn"], "method rw_target needs a model that is a chain of Linear layers"),
    (["method=rw_random", "method.callbacks.gradient_mask.sampler.start=middle"], "start='middle' is not one of random, target"),
    (["method=rw_target", "method.callbacks.gradient_mask.sampler.backend=cuda"],
     "method.callbacks.gradient_mask.sampler.backend='cuda' is invalid: it must be one of: auto, torch, numba"),
    (["method.module.metric_update_every=0"], "method.module.metric_update_every=0 is invalid: it must be an integer >= 1"),
    (["model.init=he"], "model.init='he' is invalid: it must be one of: torch, glorot_uniform, glorot_normal"),
    (["method=rw_target", "method.callbacks.gradient_mask.sampler.bias=gradient", "rw_backward=rows"],
     "rw_backward=rows draws the walk before backward"),
    # values the central rules let through, refused by the constructor that owns them
    (["model.hidden=5"], "model.hidden=5 is invalid: it must be a list of positive integers"),
    (["model=resnet18", "model.width=8.5"], "model.width=8.5 is invalid: it must be a positive integer"),
    (["model=cnn", "model.channels=[8,8,8,8,8,8]"], "model.channels=[8, 8, 8, 8, 8, 8] is invalid: it must be at most as many"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_INPUTS, ids=[" ".join(o) for o, _ in BAD_INPUTS])
def test_bad_input_is_refused_with_a_clear_message_and_nothing_written(
    tmp_path: Path, overrides: list[str], message: str
) -> None:
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as err:
        train(make_cfg(out, *overrides))
    assert message in str(err.value)
    assert not out.exists()


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        train(make_cfg(tmp_path / "run", "epochs=0", "lr=-1", "paths=0"))
    assert all(key in str(err.value) for key in ("epochs=0", "lr=-1", "paths=0"))


def test_unknown_names_are_refused_by_composition(tmp_path: Path) -> None:
    with pytest.raises(ConfigCompositionException, match="epoch"):
        make_cfg(tmp_path, "epoch=3")


@pytest.mark.slow
def test_cli_bad_value_exits_2_with_one_message(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sparse_lab", "lr=0", "paths=-2", "data=synthetic", f"hydra.run.dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert "lr=0 is invalid" in result.stderr and "paths=-2 is invalid" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "metrics.json").exists() and (tmp_path / "error.txt").exists()


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sparse_lab", "-m", "lr=0,0.001", "data=synthetic", "hardware=cpu", "epochs=1",
         f"hydra.sweep.dir={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 1
    assert "1 job(s) of the sweep failed" in result.stderr and "lr=0 is invalid" in result.stderr
    assert (tmp_path / "0" / "error.txt").exists() and not (tmp_path / "0" / "metrics.json").exists()
    assert '"status": "completed"' in (tmp_path / "1" / "metrics.json").read_text()


def test_dedicated_models_are_derived_from_the_methods_declarations() -> None:
    from sparse_lab import validation

    expected = {
        NoPropDTModel: ("noprop_dt", {NoPropDT: "noprop_dt", NoPropDTBackprop: "noprop_backprop"}),
        NoPropSharedModel: ("noprop_shared", {NoPropShared: "noprop_shared", NoPropSharedBackprop: "noprop_shared_backprop"}),
    }
    assert dedicated_models() == expected
    assert validation.DEDICATED_MODELS == expected


class SharedEncoderTwin(NoPropSharedBackprop):
    """A method outside sparse_lab.methods that declares the model it alone trains."""

    method_name = "shared_twin"


class DTOnly(NoPropDTBackprop):
    model_type = NoPropDTModel
    method_name = "dt_only"


def test_a_new_declaration_changes_the_dedicated_models(monkeypatch: pytest.MonkeyPatch) -> None:
    assert dedicated_models((SharedEncoderTwin,))[NoPropSharedModel][1][SharedEncoderTwin] == "shared_twin"
    monkeypatch.setattr(sparse_lab.methods, "DTOnly", DTOnly, raising=False)
    monkeypatch.setattr(sparse_lab.methods, "__all__", [*sparse_lab.methods.__all__, "DTOnly"])
    assert dedicated_models()[NoPropDTModel][1][DTOnly] == "dt_only"


def test_a_configured_method_is_checked_by_its_own_declaration(tmp_path: Path) -> None:
    target = f"method.module._target_={__name__}.SharedEncoderTwin"
    with pytest.raises(ConfigError, match="method=shared_twin needs its own model: add model=noprop_shared"):
        validate(make_cfg(tmp_path, "method=noprop_shared_backprop", target))
    with pytest.raises(ConfigError, match="model=noprop_dt is trained only by method=noprop_dt or method=noprop_backprop"):
        validate(make_cfg(tmp_path, "model=noprop_dt"))
    validate(make_cfg(tmp_path, "method=noprop_shared_backprop", "model=noprop_shared", target))


def _model() -> MLP:
    return MLP((4,), 3, (5,))


def _sampler() -> RandomWalkMask:
    return RandomWalkMask(paths=4)


# Constructors of methods and callbacks: (build, the config key and valid values the message must name).
BAD_CONSTRUCTIONS = [
    (lambda: Classifier(_model(), torch.optim.SGD, 3, scheduler_interval="batch"),
     "method.module.scheduler_interval='batch' is invalid: it must be one of: epoch, step"),
    (lambda: Classifier(_model(), torch.optim.SGD, 3, metric_update_every=0),
     "method.module.metric_update_every=0 is invalid: it must be an integer >= 1"),
    (lambda: Classifier(_model(), torch.optim.SGD, 3, label_smoothing=1.5),
     "method.module.label_smoothing=1.5 is invalid: it must be a number in [0, 1)"),
    (lambda: NoPropDT(_model(), torch.optim.SGD, 3), "method=noprop_dt needs its own model: add model=noprop_dt"),
    (lambda: NoPropShared(NoPropSharedModel((1, 28, 28), 10, steps=2), torch.optim.SGD, 10, eval_runs=0),
     "method.module.eval_runs=0 is invalid: it must be an integer >= 1"),
    (lambda: NoPropShared(NoPropSharedModel((1, 28, 28), 10, steps=2), torch.optim.SGD, 10, epoch_eval_runs=-1),
     "method.module.epoch_eval_runs=-1 is invalid: it must be an integer >= 1"),
    (lambda: NoPropDT(NoPropDTModel((1, 8, 8), 10, steps=1, width=0.1), torch.optim.SGD, 10, order="random"),
     "method.module.order='random' is invalid: it must be one of: batch, block"),
    (lambda: DynamicSparsity(1.0), "sparsity=1.0 is invalid: it must be a number in [0, 1)"),
    (lambda: DynamicSparsity(0.5, distribution="global"),
     "method.callbacks.dynamic_sparsity.distribution='global' is invalid: it must be one of: uniform, er, erk"),
    (lambda: DynamicSparsity(0.5, growth="momentum"),
     "method.callbacks.dynamic_sparsity.growth='momentum' is invalid: it must be one of: random, gradient"),
    (lambda: DynamicSparsity(0.5, update_every=0), "method.callbacks.dynamic_sparsity.update_every=0 is invalid"),
    (lambda: DynamicSparsity(0.5, end=0), "method.callbacks.dynamic_sparsity.end=0 is invalid: it must be a fraction"),
    (lambda: Pruner(LinearEpochSchedule(0.5, 2), scope="net"),
     "method.callbacks.pruner.scope='net' is invalid: it must be one of: global, layer, uniform, er, erk"),
    (lambda: Pruner(LinearEpochSchedule(0.5, 2), rounds=0), "method.callbacks.pruner.rounds=0 is invalid: it must be an integer >= 1"),
    (lambda: Pruner(LinearEpochSchedule(0.5, 2), shuffle="global"), "mask.shuffle='global' is invalid: it must be one of: null, layer"),
    (lambda: Pruner(LinearEpochSchedule(0.5, 2), reinit=1), "mask.reinit=1 is invalid: it must be true or false"),
    (lambda: RandomWalkGradientMask(_sampler(), backward="sideways"),
     "rw_backward='sideways' is invalid: it must be one of: dense, rows, edges"),
    (lambda: TimedProgressBar(refresh_interval_s=float("inf")), "callbacks.progress_bar.refresh_interval_s=inf is invalid"),
]


@pytest.mark.parametrize(("build", "message"), BAD_CONSTRUCTIONS, ids=[m.split(" is ")[0] for _, m in BAD_CONSTRUCTIONS])
def test_method_and_callback_constructors_name_the_config_key(build: object, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        build()  # type: ignore[operator]
    assert message in str(err.value)
