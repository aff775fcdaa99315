"""The Hydra entry point: compose the config, build every object with ``instantiate``, train, test.

torch and Lightning (several seconds of imports) are imported when a run starts, so that what Hydra
answers itself (``--help``, ``--cfg job``, an unknown option or a bad override) and a missing plugin
come back in well under a second.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from sparse_lab.atomic import atomic_write_text
from sparse_lab.errors import SparseLabError
from sparse_lab.validation import validate

if TYPE_CHECKING:
    import lightning as L

log = logging.getLogger("sparse_lab")

# Sections of the config that describe the experiment (logged as hyperparameters).
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")

HPARAM_SECTIONS = ("method", "data", "model")
KNOBS = ("seed", "epochs", "batch_size", "lr", "paths", "sparsity")


def hyperparameters(cfg: DictConfig) -> dict[str, Any]:
    """Flat ``{"a.b": value}`` view of the knobs and experiment sections, for TensorBoard's HPARAMS."""
    out: dict[str, Any] = {k: cfg[k] for k in KNOBS if k in cfg}
    if HydraConfig.initialized():
        out.update({f"choice.{k}": str(v) for k, v in HydraConfig.get().runtime.choices.items() if "/" not in k})

    def flatten(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                flatten(f"{prefix}.{key}", value)
        else:
            out[prefix] = node if isinstance(node, (int, float, str, bool)) else str(node)

    resolved = OmegaConf.to_container(cfg, resolve=True)
    for section in HPARAM_SECTIONS:
        flatten(section, resolved.get(section, {}))
    return out


def build(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, but a :class:`SparseLabError` raised by the target comes out as itself."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        while cause is not None and not isinstance(cause, SparseLabError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """The run's callbacks (``cfg.callbacks``), then the method's (``cfg.method.callbacks``).

    Entries are keyed by name; a method entry replaces a run entry of the same name.
    """
    entries = {**(cfg.get("callbacks") or {}), **(cfg.method.get("callbacks") or {})}
    return [build(entry) for entry in entries.values() if entry is not None]


def requeued_run(out_dir: Path) -> str | None:
    """``out_dir`` itself when this is a requeued SLURM job (``SLURM_RESTART_COUNT`` > 0) whose earlier
    attempt left something to continue from there (a checkpoint, Lightning's ``hpc_ckpt_N.ckpt``, or a
    lottery's ``lottery.json``); None otherwise."""
    restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
    if not restarts.isdigit() or int(restarts) < 1:
        return None
    left = [*out_dir.glob("checkpoints/*.ckpt"), *out_dir.glob("hpc_ckpt_*.ckpt"), *out_dir.glob("lottery.json")]
    if not left:
        return None
    log.info("requeued SLURM job (SLURM_RESTART_COUNT=%s): continuing the run in %s", restarts, out_dir)
    return str(out_dir)


def train(cfg: DictConfig) -> dict[str, float]:
    """Run one experiment described by ``cfg``; return the final test metrics."""
    validate(cfg)
    import lightning as L
    import torch
    from lightning.pytorch.utilities import rank_zero_only

    # Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 on import so that CUDA stays uninitialized before a
    # fork. With it set, torch.cuda.is_available() dlopens NVML on every call, and Adam calls it on every
    # step, a sizeable share of a small MLP's whole step (docs/speed.md).
    # sparse_lab never forks a process that uses CUDA (no DataLoader workers; DDP launches or spawns).
    os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    torch.set_flush_denormal(bool(cfg.get("flush_denormal", True)))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build(cfg.data)
    model_args = cfg.method.get("model_args")  # constructor arguments a method adds (small_dense's match_sparsity)
    model_args = OmegaConf.to_container(model_args, resolve=True) if model_args else {}
    model = build(cfg.model, input_shape=datamodule.input_shape, num_classes=datamodule.num_classes, **model_args)
    if cfg.get("compile", False):
        # In place (nn.Module.compile): the module, its layer names and state-dict keys stay as they are,
        # so pruning hooks, random-walk masks and checkpoints see the same model; dynamo recompiles
        # when pruning changes the layers' parameters.
        model.compile(backend=cfg.get("compile_backend", "inductor"))
    module = build(cfg.method.module, model=model, num_classes=datamodule.num_classes)
    callbacks = build_callbacks(cfg)
    protocol = build(cfg.method.get("protocol") or {"_target_": "sparse_lab.protocols.Train"})
    resume = cfg.get("resume") or requeued_run(Path(cfg.output_dir))
    protocol.check_resume(resume)  # a bad resume= is refused before anything is written
    for callback in callbacks:  # method/model compatibility, before anything is written
        if hasattr(callback, "check_model"):
            callback.check_model(model)

    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if rank_zero_only.rank == 0:  # processes started by SLURM / torchrun each run this app
        atomic_write_text(out_dir / "config_resolved.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    def make_trainer(run_dir: Path, extra_callbacks: Sequence[L.Callback] = ()) -> L.Trainer:
        """A fresh Trainer whose callbacks and logger write below ``run_dir``."""
        sub = cfg.copy()
        with open_dict(sub):
            sub.output_dir = str(run_dir)
        logger = build(sub.logger) if sub.get("logger") else False
        return build(sub.trainer, callbacks=[*build_callbacks(sub), *extra_callbacks], logger=logger)

    final = protocol.run(make_trainer, module, datamodule, out_dir, resume=resume)
    if cfg.get("logger"):
        logger = build(cfg.logger)
        logger.log_hyperparams(hyperparameters(cfg), metrics={f"final/{k.split('/')[-1]}": v for k, v in final.items()})
        logger.finalize("success")
    log.info("final test metrics: %s", final)
    return final


def objective(cfg: DictConfig, final: Mapping[str, float]) -> Any:
    """The value a run returns to a sweeper: ``final[cfg.objective]`` (default ``test/acc``), or, when
    ``objective`` is a node with ``_target_``, that callable applied to ``final`` (see :mod:`sparse_lab.objectives`)."""
    spec = cfg.get("objective", "test/acc")
    if isinstance(spec, str):
        if spec not in final:
            log.warning("objective=%s is not among the final metrics %s: returning None", spec, sorted(final))
        value = final.get(spec)
    else:
        value = build(spec)(final)
    if isinstance(value, float) and math.isnan(value):
        # optuna 2.x fails on a NaN objective inside the sweeper (and stops the sweep); None is a failed trial
        log.warning("the objective is NaN: returning None")
        return None
    return value


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> Any:
    """``python -m sparse_lab [group=option ...] [knob=value ...]``.

    Returns the run's objective (by default the final test accuracy) for a sweeper such as Optuna; a
    failed job of a multirun returns None, which the Optuna sweeper records as a failed trial.
    """
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        final = train(cfg)
        value = objective(cfg, final)
    except BaseException as exc:
        if not isinstance(exc, SparseLabError) and _is_preemption(exc):  # SaveOnSigterm wrote the checkpoint; 143 = 128 + SIGTERM, as if the signal had ended it
            log.warning("stopped by SIGTERM: continue with resume=%s", cfg.output_dir)
            sys.exit(143)
        if not isinstance(exc, Exception):
            raise
        clear = isinstance(exc, SparseLabError)
        message = f"sparse_lab: error: {exc}" if clear else traceback.format_exc()
        out_dir = Path(HydraConfig.get().runtime.output_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "error.txt", message + "\n")
        if multirun:  # one failing job does not stop the sweep; FailureSummary reports it at the end
            log.error("job failed (%s), the sweep goes on:\n%s", out_dir, message)
            return None
        if not clear:
            raise
        print(message, file=sys.stderr)
        sys.exit(2)
    return value


def _is_preemption(exc: BaseException) -> bool:
    from sparse_lab.callbacks.preemption import is_preemption  # Lightning: imported only once a run has started

    return is_preemption(exc)


# Hydra plugins that a config group option needs: (group, option) -> (plugin module, pip package).
PLUGINS: dict[tuple[str, str], tuple[str, str]] = {
    **{("hydra/launcher", o): ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher")
       for o in ("slurm", "submitit_slurm", "submitit_local")},
    ("hydra/launcher", "joblib"): ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
    ("hydra/sweeper", "optuna"): ("hydra_plugins.hydra_optuna_sweeper", "hydra-optuna-sweeper"),
}


def _chosen(argv: Sequence[str]) -> list[tuple[str, str, str]]:
    """(group, option, where) of the Hydra plugin groups that ``argv`` and the experiment it picks choose."""
    chosen = []
    for arg in argv:
        key, _, value = arg.lstrip("+~").partition("=")
        if key in ("hydra/launcher", "hydra/sweeper"):
            chosen.append((key, value, arg))
        elif key == "experiment" and value:
            preset = Path(CONFIG_DIR) / "experiment" / f"{value}.yaml"
            text = preset.read_text() if preset.is_file() else ""
            for group in ("hydra/launcher", "hydra/sweeper"):
                for line in text.splitlines():
                    if line.strip().replace("/hydra/", "hydra/").startswith(f"- override {group}:"):
                        chosen.append((group, line.split(":", 1)[1].strip(), f"{arg} (it sets {group})"))
    return chosen


def plugin_problems(argv: Sequence[str]) -> list[str]:
    """A line for every Hydra plugin that the command line asks for and that is not installed."""
    import importlib.util

    problems = []
    for group, option, where in _chosen(argv):
        module, package = PLUGINS.get((group, option), (None, None))
        if module is not None and importlib.util.find_spec(module) is None:
            problems.append(f"{where} needs the Hydra plugin {package}, which is not installed: "
                            f'pip install -e ".[cluster]" (or pip install {package})')
    return problems


def run_cli() -> None:
    """``python -m sparse_lab``: refuses a missing Hydra plugin with one line (exit 2), then runs :func:`main`."""
    problems = plugin_problems(sys.argv[1:])
    if problems:
        print("\n".join(f"sparse_lab: error: {p}" for p in problems), file=sys.stderr)
        sys.exit(2)
    main()


def cli() -> None:
    """The ``sparse-lab`` console script: ``sparse-lab report DIR ...`` makes a report, ``sparse-lab export
    RUN_DIR`` writes a run's sparse model, anything else runs."""
    if len(sys.argv) > 1 and sys.argv[1] == "report":
        from sparse_lab.report.__main__ import main as report_main

        sys.exit(report_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "export":
        from sparse_lab.export import main as export_main

        sys.exit(export_main(sys.argv[2:]))
    run_cli()
