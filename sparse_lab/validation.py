"""Config checks that run before anything is built or written: one clear message per bad value."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from sparse_lab.errors import ConfigError

Check = Callable[[Any], bool]


def _int(minimum: int) -> Check:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _positive_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def _fraction(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1


def _choice(*allowed: str) -> Check:
    return lambda v: v in allowed


def _widths(v: Any) -> bool:
    """A width (CNN's hidden layer) or a list of widths (MLP's hidden layers)."""
    return _int(1)(v) or (isinstance(v, (list, ListConfig)) and all(_int(1)(w) for w in v))


def _objective(v: Any) -> bool:
    """A metric name, or a callable's config applied to the final metrics (sparse_lab/objectives.py)."""
    if isinstance(v, str):
        return bool(v)
    return isinstance(v, DictConfig) and "_target_" in v and v.get("_partial_") is True


# (config path, check, what a valid value is). A path missing from the config is skipped.
RULES: list[tuple[str, Check, str]] = [
    ("seed", _int(0), "a non-negative integer"),
    ("epochs", _int(1), "an integer >= 1"),
    ("batch_size", _int(1), "an integer >= 1"),
    ("lr", _positive_number, "a number > 0 (e.g. lr=1e-3)"),
    ("paths", _int(1), "a positive integer (random walks per batch)"),
    ("sparsity", _fraction, "a number in [0, 1)"),
    ("rw_backward", _choice("dense", "rows", "edges"), "one of: dense, rows, edges"),
    ("target_acc", lambda v: v is None or (isinstance(v, (int, float)) and 0 < v <= 1), "null or an accuracy in (0, 1]"),
    ("resume", lambda v: v is None or isinstance(v, str), "a run dir or a .ckpt path"),
    ("flush_denormal", lambda v: isinstance(v, bool), "true or false"),
    ("compile", lambda v: isinstance(v, bool), "true or false"),
    ("compile_backend", lambda v: isinstance(v, str) and bool(v), "a torch.compile backend, e.g. inductor, aot_eager"),
    ("objective", _objective, "a final metric name (e.g. test/acc) or a node with _target_ and _partial_: true"),
    ("objective.direction", _choice("minimize", "maximize"), "one of: minimize, maximize"),
    ("data.val_size", _int(0), "an integer >= 0 (0 trains on the whole training split)"),
    ("data.eval_batch_size", _int(1), "an integer >= 1"),
    ("data.split_seed", _int(0), "a non-negative integer"),
    ("data.test_each_epoch", lambda v: isinstance(v, bool), "true or false"),
    ("data.download", lambda v: isinstance(v, bool), "true or false"),
    ("data.standardize", lambda v: isinstance(v, bool), "true or false"),
    ("model.hidden", _widths, "a positive integer or a list of them, e.g. model.hidden=[256,128]"),
    ("model.channels", _widths, "a list of positive integers, e.g. model.channels=[32,64]"),
    ("method.module.label_smoothing", _fraction, "a number in [0, 1)"),
    ("method.module.scheduler_interval", _choice("epoch", "step"), "one of: epoch, step"),
    ("method.module.metric_update_every", _int(1), "an integer >= 1 (steps whose predictions one metric update takes)"),
    ("method.callbacks.gradient_mask.sampler.backend", _choice("auto", "torch", "numba"), "one of: auto, torch, numba"),
    ("method.module.eval_runs", _int(1), "an integer >= 1 (stochastic inference runs in the final test)"),
    ("method.module.epoch_eval_runs", _int(1), "an integer >= 1 (stochastic inference runs per epoch)"),
    ("method.module.order", _choice("batch", "block"), "one of: batch, block"),
    ("model.steps", _int(1), "an integer >= 1 (NoProp blocks)"),
    ("model.width", _positive_number, "a number > 0 (1.0 = the paper's block widths)"),
    ("model.embedding", _choice("onehot", "learned"), "one of: onehot, learned"),
    ("model.inference", _choice("renoise", "chain"), "one of: renoise, chain"),
    ("model.padding", _int(0), "an integer >= 0 (the encoder's 3x3 convolutions)"),
    ("model.init", _choice("torch", "glorot_uniform", "glorot_normal"), "one of: torch, glorot_uniform, glorot_normal"),
]

# Models that only their own methods can train: model target -> (model option, method options by target).
DEDICATED_MODELS: dict[str, tuple[str, dict[str, str]]] = {
    "sparse_lab.models.NoPropDTModel": (
        "noprop_dt",
        {"sparse_lab.methods.NoPropDT": "noprop_dt", "sparse_lab.methods.NoPropDTBackprop": "noprop_backprop"},
    ),
    "sparse_lab.models.NoPropSharedModel": (
        "noprop_shared",
        {
            "sparse_lab.methods.NoPropShared": "noprop_shared",
            "sparse_lab.methods.NoPropSharedBackprop": "noprop_shared_backprop",
        },
    ),
}


def _compatibility(cfg: DictConfig) -> list[str]:
    """Method/model pairs that cannot train together."""
    model = OmegaConf.select(cfg, "model._target_")
    method = OmegaConf.select(cfg, "method.module._target_")
    for target, (model_option, methods) in DEDICATED_MODELS.items():
        if method in methods and model != target:
            return [f"method={methods[method]} needs its own model: add model={model_option}"]
    for target, (model_option, methods) in DEDICATED_MODELS.items():
        if model == target and method not in methods:
            options = " or ".join(f"method={m}" for m in methods.values())
            return [f"model={model_option} is trained only by {options}"]
    return []


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` naming every invalid value, before any training or writing."""
    problems = []
    for path, check, valid in RULES:
        try:
            value = OmegaConf.select(cfg, path, throw_on_missing=True)
        except Exception as exc:  # an interpolation that cannot resolve
            problems.append(f"{path}: {exc}")
            continue
        if value is None and "." in path:  # an option this data/model/method does not have
            continue
        if not check(value):
            problems.append(f"{path}={value!r} is invalid: it must be {valid}")
    walk_backward = OmegaConf.select(cfg, "method.callbacks.gradient_mask.backward")
    if cfg.get("compile") is True and walk_backward in ("rows", "edges"):
        # The row- and edge-sparse backwards read the walk from their layers at run time; a compiled
        # graph would keep the walk it saw when it was traced.
        problems.append(
            f"compile=true cannot be combined with rw_backward={walk_backward}: use rw_backward=dense or compile=false"
        )
    problems += _compatibility(cfg)
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
