"""Config checks that run before anything is built or written: one clear message per bad value.

Imports the config library only; the checks that need classes import them when they run."""

from __future__ import annotations

import math
import os
import typing
import warnings
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from sparse_lab.checks import INITS, SCOPES, invalid, is_int, is_number
from sparse_lab.errors import ConfigError

Check = Callable[[Any], bool]


def _int(minimum: int) -> Check:
    return lambda v: is_int(v, minimum)


def _positive_number(v: Any) -> bool:
    return is_number(v, 0, open_low=True)


def _fraction(v: Any) -> bool:
    return is_number(v, 0) and v < 1


def _numbers(check: Check, allow_none: bool = True) -> Check:
    """null (with ``allow_none``) or a list of values that pass ``check``."""
    return lambda v: (allow_none and v is None) or (isinstance(v, (list, ListConfig)) and len(v) > 0 and all(check(x) for x in v))


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
    ("lr", _positive_number, "a number > 0, finite (e.g. lr=1e-3)"),
    ("paths", _int(1), "a positive integer (random walks per batch)"),
    ("sparsity", _fraction, "a number in [0, 1)"),
    ("rw_backward", _choice("dense", "rows", "edges"), "one of: dense, rows, edges"),
    ("mask.shuffle", lambda v: v in (None, "layer"), "null or layer"),
    ("mask.reinit", lambda v: isinstance(v, bool), "true or false"),
    ("target_acc", lambda v: v is None or is_number(v, 0, 1, open_low=True), "null or an accuracy in (0, 1]"),
    ("resume", lambda v: v is None or isinstance(v, str), "a run dir or a .ckpt path"),
    ("flush_denormal", lambda v: isinstance(v, bool), "true or false"),
    ("compile", lambda v: isinstance(v, bool), "true or false"),
    ("sparse_kernels", lambda v: isinstance(v, bool), "true or false"),
    ("compile_backend", lambda v: isinstance(v, str) and bool(v), "a torch.compile backend, e.g. inductor, aot_eager"),
    ("objective", _objective, "a final metric name (e.g. test/acc) or a node with _target_ and _partial_: true"),
    ("objective.direction", _choice("minimize", "maximize"), "one of: minimize, maximize"),
    ("objective.at_least", lambda v: is_number(v), "a finite number (the metric's floor, e.g. target_acc=0.95)"),
    ("objective.worst", lambda v: is_number(v), "a finite number (the value of a run that misses the floor)"),
    ("objective.scale", lambda v: is_number(v, 0), "a finite number >= 0"),
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
    ("model.width", _positive_number, "a finite number > 0 (NoProp: 1.0 = the paper's block widths; ResNet: 64 = the reference)"),
    ("model.embedding", _choice("onehot", "learned"), "one of: onehot, learned"),
    ("model.inference", _choice("renoise", "chain"), "one of: renoise, chain"),
    ("model.padding", _int(0), "an integer >= 0 (the encoder's 3x3 convolutions)"),
    ("model.init", _choice(*INITS), f"one of: {', '.join(INITS)}"),
    ("model.features", _int(1), "an integer >= 1"),
    ("model.embedding_dim", lambda v: v is None or is_int(v, 1), "null or an integer >= 1"),
    ("model.dropout", _fraction, "a number in [0, 1)"),
    ("model.schedule_offset", _positive_number, "a finite number > 0 (0.008 in the paper)"),
    ("model.eta", lambda v: is_number(v, 0), "a finite number >= 0"),
    ("model.alpha_start", lambda v: is_number(v, 0, 1, open_low=True), "a number in (0, 1]"),
    ("model.alpha_end", lambda v: is_number(v, 0, 1, open_low=True), "a number in (0, 1]"),
    ("data.train_size", _int(1), "an integer >= 1 (synthetic training samples)"),
    ("data.test_size", _int(1), "an integer >= 1 (synthetic test samples)"),
    ("data.num_classes", _int(2), "an integer >= 2"),
    ("data.noise", lambda v: is_number(v, 0), "a finite number >= 0"),
    ("data.data_seed", _int(0), "a non-negative integer"),
    ("data.shape", lambda v: isinstance(v, (list, ListConfig)) and len(v) == 3 and all(is_int(x, 1) for x in v),
     "[channels, height, width], positive integers, e.g. data.shape=[1,28,28]"),
    ("data.mean", _numbers(is_number), "null or a list of finite numbers, one per channel"),
    ("data.std", _numbers(_positive_number), "null or a list of finite numbers > 0, one per channel"),
    ("method.module.optimizer.weight_decay", lambda v: is_number(v, 0), "a finite number >= 0"),
    ("method.callbacks.update_stats.changed_every_n_steps", _int(1), "an integer >= 1"),
    ("method.callbacks.pruner.scope", _choice(*SCOPES), f"one of: {', '.join(SCOPES)}"),
    ("method.callbacks.pruner.rounds", _int(1), "an integer >= 1"),
    ("method.callbacks.dynamic_sparsity.distribution", _choice(*SCOPES[2:]), f"one of: {', '.join(SCOPES[2:])}"),
    ("trainer.log_every_n_steps", _int(1), "an integer >= 1"),
    ("trainer.gradient_clip_val", lambda v: v is None or is_number(v, 0), "null or a finite number >= 0 (0: no clipping)"),
    ("trainer.gradient_clip_algorithm", _choice("norm", "value"), "one of: norm, value"),
    ("trainer.accumulate_grad_batches", _int(1), "an integer >= 1"),
    ("callbacks.progress_bar.refresh_interval_s", _positive_number, "a finite number > 0 (seconds)"),
]

def _target_class(cfg: DictConfig, path: str) -> type | None:
    """The class a ``_target_`` at ``path`` names (imported now), or None when it names none."""
    from hydra.utils import get_class

    if OmegaConf.select(cfg, path) is None:  # unset: get_class would log an error for it
        return None
    try:
        return get_class(OmegaConf.select(cfg, path))
    except Exception:
        return None


def dedicated_models(extra: tuple[type, ...] = ()) -> dict[type, tuple[str, dict[type, str]]]:
    """Models that only their own methods can train: model class -> (its model option, {method class:
    method option}), read from the methods' declarations (``model_type``, ``method_name``) in
    :mod:`sparse_lab.methods` and ``extra`` (e.g. a configured method defined elsewhere), and the
    models' ``config_option``."""
    import sparse_lab.methods

    methods = [getattr(sparse_lab.methods, name) for name in sparse_lab.methods.__all__]
    owners: dict[type, tuple[str, dict[type, str]]] = {}
    for method in (*methods, *extra):
        model = getattr(method, "model_type", None) if isinstance(method, type) else None
        if model is not None:
            owners.setdefault(model, (model.config_option, {}))[1][method] = method.method_name
    return owners


def __getattr__(name: str) -> Any:
    # DEDICATED_MODELS is computed on first use: it imports the methods (Lightning), which this module
    # does not import at load time.
    if name == "DEDICATED_MODELS":
        return dedicated_models()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _compatibility(cfg: DictConfig) -> list[str]:
    """Method/model pairs that cannot train together."""
    model = _target_class(cfg, "model._target_")
    method = _target_class(cfg, "method.module._target_")
    needs = getattr(method, "model_type", None)
    if needs is not None and not (isinstance(model, type) and issubclass(model, needs)):
        return [f"method={method.method_name} needs its own model: add model={needs.config_option}"]
    for owned, (model_option, methods) in dedicated_models((method,) if method is not None else ()).items():
        if model is not None and issubclass(model, owned) and method not in methods:
            options = " or ".join(f"method={m}" for m in methods.values())
            return [f"model={model_option} is trained only by {options}"]
    return []


def _protocol(cfg: DictConfig) -> list[str]:
    """The protocol's own checks (its constructor's, one problem a line), named by their config path."""
    node = OmegaConf.select(cfg, "method.protocol")
    if node is None:
        return []
    from sparse_lab.app import build  # app imports this module

    try:
        protocol = build(node)
    except ConfigError as exc:
        return [f"method.protocol.{line.strip()}" for line in str(exc).splitlines() if line.strip()]
    except Exception as exc:  # an unknown option, a wrong type
        return [f"method.protocol: {exc}".splitlines()[0]]
    problems = []
    if getattr(protocol, "target", None) is not None and getattr(protocol, "monitor", "").startswith("test/"):
        if OmegaConf.select(cfg, "data.test_each_epoch") is False:
            problems.append(
                f"method.protocol.target={protocol.target} stops rounds when {protocol.monitor} reaches it, which needs "
                "data.test_each_epoch=true (or target_acc=null: every round trains for round_epoch_cap epochs)"
            )
    rewind = getattr(protocol, "rewind_step", 0)
    steps = _train_steps(cfg)
    if rewind and steps is not None and rewind >= steps:
        problems.append(
            f"method.protocol.rewind_step={rewind} is past the end of round 0 ({steps} steps: epochs x batches): "
            f"use a rewind_step < {steps}"
        )
    return problems


def _accelerators() -> set[str]:
    from lightning.pytorch.accelerators import AcceleratorRegistry

    return {*AcceleratorRegistry.available_accelerators(), "gpu", "auto"}


def _precisions() -> set[str]:
    from lightning.fabric.connector import _PRECISION_INPUT

    def flat(t: Any) -> list[Any]:
        args = typing.get_args(t)
        return [x for a in args for x in flat(a)] if args else [t]

    return {str(p) for p in flat(_PRECISION_INPUT)}


def _hardware(cfg: DictConfig) -> list[str]:
    """The accelerator, device count and precision the trainer asks for exist here."""
    import torch

    trainer = cfg.get("trainer") or {}
    accelerator, devices, precision = trainer.get("accelerator", "auto"), trainer.get("devices", "auto"), trainer.get("precision")
    problems = []
    if isinstance(accelerator, str):
        if accelerator not in _accelerators():
            problems.append(f"trainer.accelerator={accelerator!r} is invalid: it must be one of: {', '.join(sorted(_accelerators()))}")
        elif accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
            problems.append(
                f"trainer.accelerator={accelerator} needs a CUDA GPU and torch sees none on this machine: "
                "use hardware=cpu (or hardware=ddp_cpu), or hardware=auto, which takes the GPU when there is one"
            )
        elif accelerator in ("gpu", "cuda") and is_int(devices, 1) and devices > torch.cuda.device_count():
            problems.append(
                f"trainer.devices={devices} asks for more GPUs than the {torch.cuda.device_count()} visible here: "
                "use trainer.devices=-1 (all of them) or a smaller number"
            )
        elif accelerator == "mps" and not torch.backends.mps.is_available():
            problems.append("trainer.accelerator=mps needs Apple's MPS backend, which is not available here: use hardware=cpu")
    if not (devices in ("auto", -1) or is_int(devices, 1) or isinstance(devices, (list, ListConfig))):
        problems.append(f"trainer.devices={devices!r} is invalid: it must be an integer >= 1, -1 (all) or auto")
    if precision is not None and str(precision) not in _precisions():
        problems.append(
            f"trainer.precision={precision!r} is invalid: it must be one of: 32-true, bf16-mixed, 16-mixed, bf16-true, 16-true, 64-true"
        )
    elif str(precision) in ("16-mixed", "16") and (accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())):
        problems.append(f"trainer.precision={precision} needs a GPU: on the CPU use trainer.precision=bf16-mixed or 32-true")
    return problems


def _data_target(cfg: DictConfig) -> Any:
    return _target_class(cfg, "data._target_")


def _train_split(cfg: DictConfig) -> int | None:
    """Samples in the data set's training split (before the validation split), if known before loading."""
    size = OmegaConf.select(cfg, "data.train_size")
    return size if is_int(size, 1) else getattr(_data_target(cfg), "train_samples", None)


def _train_steps(cfg: DictConfig) -> int | None:
    """Optimizer steps of ``epochs`` epochs (None when the data size is not known before loading)."""
    split, val = _train_split(cfg), OmegaConf.select(cfg, "data.val_size") or 0
    batch, epochs, limit = cfg.get("batch_size"), cfg.get("epochs"), OmegaConf.select(cfg, "trainer.limit_train_batches")
    if split is None or not (is_int(batch, 1) and is_int(epochs, 1) and is_int(val, 0)) or split <= val:
        return None
    batches = math.ceil((split - val) / batch)
    if is_int(limit, 1):
        batches = min(batches, limit)
    return epochs * batches


def _data_size(cfg: DictConfig) -> list[str]:
    """The validation split leaves training samples, and a batch is not larger than the training set."""
    split, val, batch = _train_split(cfg), OmegaConf.select(cfg, "data.val_size"), cfg.get("batch_size")
    if split is None or not is_int(val, 0) or not is_int(batch, 1):
        return []
    if val >= split:
        return [f"data.val_size={val} leaves no training samples (the training split has {split}): use data.val_size < {split}"]
    if batch > split - val:
        return [
            f"batch_size={batch} is larger than the training set ({split - val} samples): it would train on one batch an "
            f"epoch; use batch_size <= {split - val}"
        ]
    return []


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return ""


def memory_limit() -> int:
    """This machine's physical memory in bytes (``SPARSE_LAB_MEMORY_GB`` overrides it)."""
    if os.environ.get("SPARSE_LAB_MEMORY_GB"):
        return int(float(os.environ["SPARSE_LAB_MEMORY_GB"]) * 2**30)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _model_footprint(cfg: DictConfig, shape: tuple[int, ...], classes: int) -> tuple[int, int | None, int] | None:
    """(parameters, activations per sample, Linear layers) of ``cfg.model`` built on the meta device (no
    memory used); activations are None when a plain forward pass of images cannot be traced."""
    import torch
    from hydra.utils import instantiate
    from torch import nn

    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zero-size layers on the meta device
            model = instantiate(cfg.model, input_shape=shape, num_classes=classes)
    except Exception:
        return None
    params = sum(p.numel() for p in model.parameters())
    linears = sum(isinstance(m, nn.Linear) for m in model.modules())
    outputs: list[int] = []
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.append(o.numel() if isinstance(o, torch.Tensor) else 0))
             for m in model.modules() if not list(m.children())]
    try:
        model(torch.empty(1, *shape, device="meta"))
        activations: int | None = sum(outputs) + math.prod(shape)
    except Exception:
        activations = None
    for hook in hooks:
        hook.remove()
    return params, activations, linears


def _memory(cfg: DictConfig) -> list[str]:
    """Options whose memory grows with their value, against an estimate of what they need (float32)."""
    data = _data_target(cfg)
    shape = OmegaConf.select(cfg, "data.shape") or getattr(data, "input_shape", None)
    classes = OmegaConf.select(cfg, "data.num_classes") or getattr(data, "num_classes", None)
    if shape is None or not is_int(classes, 2) or not all(is_int(x, 1) for x in shape):
        return []
    shape = tuple(shape)
    footprint = _model_footprint(cfg, shape, classes)
    needs: list[tuple[str, float, str]] = []  # (option, bytes, how)
    if footprint is not None:
        params, activations, linears = footprint
        widths = [f"model.{k}={OmegaConf.select(cfg, 'model.' + k)}" for k in ("hidden", "channels", "width", "features", "steps")
                  if OmegaConf.select(cfg, "model." + k) is not None]
        needs.append((", ".join(widths) or "model", params * 16.0, f"{params:,} parameters x 16 B: weights, gradients, Adam's two moments"))
        if activations is not None:
            for key, factor in (("batch_size", 8), ("data.eval_batch_size", 4)):
                n = OmegaConf.select(cfg, key)
                if is_int(n, 1):
                    needs.append((f"{key}={n}", n * activations * float(factor),
                                  f"{activations:,} activations a sample x {factor} B"))
        paths = OmegaConf.select(cfg, "method.callbacks.gradient_mask.sampler.paths")
        if is_int(paths, 1):
            needs.append((f"paths={paths}", paths * linears * 64.0, f"one step's walk: 64 B per path and layer x {linears} Linear layers"))
    samples = [OmegaConf.select(cfg, k) for k in ("data.train_size", "data.test_size")]
    if all(is_int(n, 1) for n in samples):
        needs.append((f"data.train_size={samples[0]}, data.test_size={samples[1]}", sum(samples) * math.prod(shape) * 9.0,
                      "9 B a pixel while the synthetic images are drawn"))
    for key in ("method.module.eval_runs", "method.module.epoch_eval_runs"):
        runs, batch = OmegaConf.select(cfg, key), OmegaConf.select(cfg, "data.eval_batch_size")
        if is_int(runs, 1) and is_int(batch, 1):
            needs.append((f"{key}={runs}", runs * batch * classes * 8.0, f"{classes} class scores of each run for a batch of {batch}"))
    limit = memory_limit()
    problems = [
        f"{option} needs about {_bytes(need)} ({how}), more than this machine's {_bytes(limit)} of memory: use a smaller value"
        for option, need, how in needs if need > limit
    ]
    total = sum(need for _, need, _ in needs)
    if not problems and total > limit:
        parts = ", ".join(f"{option}: {_bytes(need)}" for option, need, _ in needs)
        problems.append(f"the run needs about {_bytes(total)} ({parts}), more than this machine's {_bytes(limit)} of memory: use smaller values")
    return problems


def _gradient_options(cfg: DictConfig) -> list[str]:
    """Lightning's gradient clipping and accumulation, refused for the methods that cannot honour them:
    those not built on the Classifier (which hands both to Lightning's automatic loop) and, for
    accumulation, the random-walk methods."""
    clip = OmegaConf.select(cfg, "trainer.gradient_clip_val")
    accumulate = OmegaConf.select(cfg, "trainer.accumulate_grad_batches")
    asked = [f"trainer.gradient_clip_val={clip}"] if is_number(clip) and clip > 0 else []
    if is_int(accumulate, 2):
        asked.append(f"trainer.accumulate_grad_batches={accumulate}")
    if not asked:
        return []
    from sparse_lab.methods import Classifier

    module = _target_class(cfg, "method.module._target_")
    if isinstance(module, type) and not issubclass(module, Classifier):
        return [f"{' and '.join(asked)} cannot be used with {module.__name__}: it steps its optimizers by hand "
                "(manual optimization), which Lightning's clipping and accumulation do not reach; remove the option"]
    if is_int(accumulate, 2) and OmegaConf.select(cfg, "method.callbacks.gradient_mask") is not None:
        return [f"trainer.accumulate_grad_batches={accumulate} cannot be used with the random-walk methods: each "
                "optimizer step keeps the gradients of the walk drawn for its batch; use a larger batch_size instead"]
    return []


def _sparse_kernels(cfg: DictConfig) -> list[str]:
    """``sparse_kernels=true`` only for a method that trains under pruning masks a MaskEnforcer keeps
    (its callbacks, or the lottery's rounds), and not compiled."""
    if cfg.get("sparse_kernels") is not True:
        return []
    from sparse_lab.callbacks import MaskEnforcer
    from sparse_lab.protocols import LotteryTicket

    callbacks = OmegaConf.select(cfg, "method.callbacks") or {}
    classes = {name: _target_class(cfg, f"method.callbacks.{name}._target_") for name in callbacks}
    masked = [n for n, c in classes.items() if isinstance(c, type) and issubclass(c, MaskEnforcer)]
    protocol = _target_class(cfg, "method.protocol._target_")
    problems = []
    if not masked and not (isinstance(protocol, type) and issubclass(protocol, LotteryTicket)):
        problems.append("sparse_kernels=true needs a method that trains under pruning masks (snip, grasp, synflow, random, "
                        "set, rigl, progressive, gmp, lottery, imp); this one has none: drop sparse_kernels=true")
    if cfg.get("compile") is True:
        problems.append("sparse_kernels=true cannot be combined with compile=true: the compiled kernels run outside "
                        "torch.compile's graph; use one of them")
    return problems


def _mask_controls(cfg: DictConfig) -> list[str]:
    """``mask.shuffle`` and ``mask.reinit`` only where the method's callbacks use them (pruning at
    initialization), so that a control asked for is never silently left out."""
    callbacks = OmegaConf.select(cfg, "method.callbacks") or {}
    problems = []
    for key in ("shuffle", "reinit"):
        value = OmegaConf.select(cfg, f"mask.{key}")
        if value is None or value is False:  # off
            continue
        if not any(isinstance(node, DictConfig) and key in node for node in callbacks.values()):
            shown = str(value).lower() if isinstance(value, bool) else value
            problems.append(f"mask.{key}={shown} applies to pruning at initialization (method=snip, grasp, synflow, "
                            "random, prune_at_init), which this method is not; a lottery's control is "
                            "method.protocol.control=shuffle or reinit")
    return problems


def _model_args(cfg: DictConfig) -> list[str]:
    """The constructor arguments a method adds to the model (``method.model_args``) exist on the model."""
    import inspect

    args = OmegaConf.select(cfg, "method.model_args")
    model = _target_class(cfg, "model._target_")
    if not args or model is None:
        return []
    missing = [k for k in args if k not in inspect.signature(model).parameters]
    if missing:
        return [f"method.model_args.{missing[0]}: this method needs a model that takes {', '.join(missing)}, which "
                f"{OmegaConf.select(cfg, 'model._target_')} does not: use model=mlp or model=lenet300"]
    return []


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` naming every invalid value, before any training or writing: the
    values (:data:`RULES`), method/model pairs, gradient options, sparse kernels, protocol options,
    hardware, data and memory, all in one message."""
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
            problems.append(invalid(path, value, valid))
    walk_backward = OmegaConf.select(cfg, "method.callbacks.gradient_mask.backward")
    if cfg.get("compile") is True and walk_backward in ("rows", "edges"):
        # The row- and edge-sparse backwards read the walk from their layers at run time; a compiled
        # graph would keep the walk it saw when it was traced.
        problems.append(
            f"compile=true cannot be combined with rw_backward={walk_backward}: use rw_backward=dense or compile=false"
        )
    problems += _compatibility(cfg)
    problems += _gradient_options(cfg)
    problems += _sparse_kernels(cfg)
    problems += _mask_controls(cfg)
    problems += _model_args(cfg)
    problems += _protocol(cfg)
    problems += _hardware(cfg)
    problems += _data_size(cfg) or _memory(cfg)
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
