"""Iterative magnitude pruning with rewinding (Frankle & Carbin), and the random-reinit control."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor, nn

from sparse_lab.atomic import atomic_torch_save, atomic_write_text
from sparse_lab.errors import ConfigError
from sparse_lab.plots import decorate, new_axes, save
from sparse_lab.protocols.train import Train, TrainerFactory, fit_and_test
from sparse_lab.callbacks.masking import MaskEnforcer, inner_model
from sparse_lab.sparsity import MaskSet, keep_above_percentile, scores
from sparse_lab.sparsity.legacy import masks_by_name
from sparse_lab.sparsity.select import shuffle_within_layers
from sparse_lab.validation import is_int, is_number


class _Snapshot(L.Callback):
    """Copies the model's parameters when ``trainer.global_step`` reaches ``step`` (late rewinding).

    Global rank 0 also saves them to ``path``: under ddp_spawn the fit runs in other processes,
    and :meth:`result` reads them back in the main process.
    """

    def __init__(self, step: int, path: Path) -> None:
        self.step = step
        self.path = path
        self.state: dict[str, Tensor] | None = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.step and self.state is None:
            self.state = {n: p.detach().clone() for n, p in inner_model(pl_module).named_parameters()}
            if trainer.is_global_zero:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                atomic_torch_save({k: v.cpu() for k, v in self.state.items()}, self.path)

    def result(self) -> dict[str, Tensor] | None:
        """The snapshot, from this process or from the file the fit's processes wrote."""
        if self.state is None and self.path.is_file():
            self.state = torch.load(self.path)
        return self.state


@rank_zero_only
def _save(obj: Any, path: Path) -> None:
    """``torch.save`` on global rank 0 only (every rank holds the same weights and masks), atomically."""
    atomic_torch_save(obj, path)


@rank_zero_only
def _write_json(obj: Any, path: Path) -> None:
    """Write ``obj`` as JSON on global rank 0 only, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2))


def reinitialize(model: nn.Module) -> None:
    """Draw ``model``'s parameters afresh: with its own ``reset_parameters`` (its init scheme) when it
    has one, else with each submodule's."""
    if callable(getattr(model, "reset_parameters", None)):
        model.reset_parameters()
        return
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()


class LotteryTicket(Train):
    """Round 0 trains the dense net for the trainer's ``max_epochs``. Each later round prunes
    ``prune_percent`` % of the remaining weights (one global percentile threshold over the active
    weights, strict ``<``), rewinds every surviving weight and bias to its initial value theta_0
    (``rewind_step=k``: to its value after k steps of round 0, "late rewinding"),
    and retrains with the mask fixed until test accuracy reaches ``target`` (or for
    ``round_epoch_cap`` epochs; with ``target=None`` always for the cap). Every round sees the same
    data order. It stops after ``rounds`` rounds, or (``stop_on_miss``) after the first round that
    misses the target. ``final_sparsity=S`` replaces ``prune_percent`` by the percent that reaches
    S after ``rounds - 1`` pruning rounds (``100 (1 - (1 - S)^(1/(rounds-1)))``). The control trains
    the last round that reached the target the same way: ``control="reinit"`` (or ``true``) with the
    same mask and a fresh random init (seed ``control_seed``); ``"shuffle"`` with theta_0 and the mask
    permuted within each layer (same counts; Frankle et al. 2021); ``false``: none.

    Data parallel: the rounds' fits and tests are distributed, the protocol itself runs in the main
    process (ddp_spawn) or, with externally started processes (ddp_multinode), on every rank, with
    the same decisions everywhere (they depend on test metrics reduced over ranks); only global
    rank 0 writes files, and nothing written in a round is read back in it.

    Written as it goes: ``lottery.json`` (one record per round, then the control), each round's
    run dir ``round_NN/`` (metrics.json, TensorBoard, checkpoints) and ``round_NN/ticket.pt``
    (masks, the rewound initial weights and the trained weights), ``theta0.pt``, and the figures
    ``lottery.png`` and ``control_curve.png``. ``resume=RUN_DIR`` continues after the last
    finished round of an interrupted run.
    """

    def __init__(
        self,
        rounds: int = 15,
        prune_percent: float = 20.0,
        target: float | None = None,
        round_epoch_cap: int = 40,
        stop_on_miss: bool = True,
        control: bool | str = True,
        control_seed: int = 1000,
        monitor: str = "test/acc",
        rewind_step: int = 0,
        final_sparsity: float | None = None,
    ) -> None:
        checks = [
            ("rounds", rounds, is_int(rounds, 1), "an integer >= 1"),
            ("prune_percent", prune_percent, is_number(prune_percent, 0, 100, open_low=True) and prune_percent < 100, "a number in (0, 100)"),
            ("target", target, target is None or is_number(target, 0, 1, open_low=True), "null or an accuracy in (0, 1]"),
            ("round_epoch_cap", round_epoch_cap, is_int(round_epoch_cap, 1), "an integer >= 1"),
            ("control_seed", control_seed, is_int(control_seed, 0), "a non-negative integer"),
            ("rewind_step", rewind_step, is_int(rewind_step, 0), "an integer >= 0 (0: rewind to theta_0)"),
            ("stop_on_miss", stop_on_miss, isinstance(stop_on_miss, bool), "true or false"),
            ("control", control, control in (True, False, "reinit", "shuffle"), "true, false, reinit or shuffle"),
            ("final_sparsity", final_sparsity, final_sparsity is None or (is_number(final_sparsity, 0, 1)
                                                                       and final_sparsity < 1 and is_int(rounds, 2)),
             "null or a number in [0, 1), with rounds >= 2"),
        ]
        problems = [f"{name}={value!r} is invalid: it must be {valid}" for name, value, ok, valid in checks if not ok]
        if problems:
            raise ConfigError("\n".join(problems))
        if final_sparsity is not None:
            prune_percent = 100 * (1 - (1 - final_sparsity) ** (1 / (rounds - 1)))
        self.rounds = rounds
        self.prune_percent = prune_percent
        self.target = target
        self.round_epoch_cap = round_epoch_cap
        self.stop_on_miss = stop_on_miss
        self.control = control
        self.control_seed = control_seed
        self.monitor = monitor
        self.rewind_step = rewind_step

    def check_resume(self, resume: str | None) -> None:
        if resume and not (Path(resume) / "lottery.json").is_file():
            raise ConfigError(f"resume={resume} has no lottery.json: give the run dir of an interrupted lottery run")

    # ---- weights ----
    @staticmethod
    def _rewind(model: nn.Module, theta0: dict[str, Tensor], masks: MaskSet) -> None:
        """Every parameter back to theta_0, then the masks applied."""
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.copy_(theta0[name])
        masks.apply()

    @staticmethod
    def _params(model: nn.Module) -> dict[str, Tensor]:
        """A copy of every parameter, by name."""
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    def _round_stop(self) -> list[L.Callback]:
        if self.target is None:
            return []
        return [EarlyStopping(monitor=self.monitor, mode="max", stopping_threshold=self.target, patience=10**9,
                              check_finite=False)]

    def _train_round(
        self, name: str, make_trainer: TrainerFactory, module: L.LightningModule, datamodule: L.LightningDataModule,
        out_dir: Path, dense: bool, extra: list[L.Callback] | None = None,
    ) -> tuple[dict[str, Any], Path]:
        run_dir = out_dir / name
        trainer = make_trainer(run_dir, (extra or []) + ([] if dense else self._round_stop()))
        if not dense:
            trainer.fit_loop.max_epochs = self.round_epoch_cap
        final = fit_and_test(trainer, module, datamodule)
        record = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").exists() else {}
        epochs = len(record.get("epochs") or []) or trainer.current_epoch
        acc = final.get("test/acc", float("nan"))
        return {"epochs": epochs, **final, "reached": None if self.target is None else acc >= self.target}, run_dir

    def run(
        self,
        make_trainer: TrainerFactory,
        module: L.LightningModule,
        datamodule: L.LightningDataModule,
        out_dir: Path,
        resume: str | None = None,
    ) -> dict[str, float]:
        model = inner_model(module)
        masks = MaskSet(model)
        template = copy.deepcopy(model)  # for the control's fresh init
        if resume:
            previous = Path(resume)
            theta0 = torch.load(previous / "theta0.pt")
            state = json.loads((previous / "lottery.json").read_text())
            state.pop("control", None)
            last = state["rounds"][-1]
            ticket = torch.load(previous / f"round_{last['round']:02d}" / "ticket.pt")
            masks.set(masks_by_name(ticket["masks"], masks.params))
            self._rewind(model, ticket["trained"], masks)
            start = last["round"] + 1
            if self.stop_on_miss and last.get("reached") is False:
                start = self.rounds
        else:
            theta0 = {k: v.clone() for k, v in model.state_dict().items()}
            state = {"prune_percent": self.prune_percent, "target": self.target, "rounds": []}
            start = 0
        _save(theta0, out_dir / "theta0.pt")
        round_masks: dict[int, dict[str, Tensor]] = {}

        for k in range(start, self.rounds):
            if k > 0:
                pruned = keep_above_percentile(scores.magnitude(masks), self.prune_percent, masks.masks)
                masks.set(pruned)
                self._rewind(model, theta0, masks)
            initial = self._params(model)
            rewind = k == 0 and self.rewind_step > 0
            snapshot = _Snapshot(self.rewind_step, out_dir / "round_00" / "rewind_snapshot.pt") if rewind else None
            extra = [snapshot] if snapshot else [MaskEnforcer(masks)] if k > 0 else []
            result, run_dir = self._train_round(f"round_{k:02d}", make_trainer, module, datamodule, out_dir, dense=k == 0, extra=extra)
            if snapshot is not None:
                snapped = snapshot.result()
                if snapped is None:
                    raise ConfigError(f"rewind_step={self.rewind_step} is past the end of round 0's training")
                theta0 = snapped
                _save(theta0, out_dir / "theta0.pt")
            state["rounds"].append({"round": k, "kept": masks.kept, "sparsity": 1 - masks.kept / masks.total, **result})
            round_masks[k] = masks.state_dict()
            _save({"masks": round_masks[k], "initial": initial, "trained": self._params(model)}, run_dir / "ticket.pt")
            _write_json(state, out_dir / "lottery.json")
            if self.stop_on_miss and result["reached"] is False and k > 0:
                break

        winners = [r for r in state["rounds"] if r["reached"] is not False and r["round"] > 0]
        winner = (winners or state["rounds"])[-1]
        if self.control and winner["round"] > 0:
            winning = round_masks.get(winner["round"])
            if winning is None:  # a round of the run this one resumed: its ticket is in that run's dir
                saved = torch.load(Path(resume) / f"round_{winner['round']:02d}" / "ticket.pt")["masks"]
                winning = masks_by_name(saved, masks.params)
            if self.control == "shuffle":
                masks.set(shuffle_within_layers(winning, torch.Generator().manual_seed(self.control_seed)))
                self._rewind(model, theta0, masks)
            else:
                torch.manual_seed(self.control_seed)
                reinitialize(template)
                masks.set(winning)
                self._rewind(model, template.state_dict(), masks)
            result, _ = self._train_round("control", make_trainer, module, datamodule, out_dir, dense=False, extra=[MaskEnforcer(masks)])
            kind = "shuffle" if self.control == "shuffle" else "reinit"
            state["control"] = {"kind": kind, "round": winner["round"], "kept": winner["kept"], "sparsity": winner["sparsity"], **result}
            _write_json(state, out_dir / "lottery.json")
        state["winner"] = winner
        _write_json(state, out_dir / "lottery.json")
        test = {k: v for k, v in winner.items() if k.startswith("test/")}
        summary = {"status": "completed", "epochs": [], "test": test, "lottery": state}
        _write_json(summary, out_dir / "metrics.json")
        if rank_zero_only.rank == 0:
            self._plot(state, out_dir)
        return test

    def _plot(self, state: dict[str, Any], out_dir: Path) -> None:
        rounds = state["rounds"]
        fig, ax = new_axes()
        ax.plot([100 * r["sparsity"] for r in rounds], [r["test/acc"] for r in rounds], marker="o", label="IMP, rewound to theta_0")
        if "control" in state:
            c = state["control"]
            ax.plot([100 * c["sparsity"]], [c["test/acc"]], marker="x", color="k", linestyle="none", markersize=10,
                    label="layer-shuffled mask, theta_0 (control)" if c.get("kind") == "shuffle" else "random reinit (control)")
        decorate(ax, "sparsity (%)", "test accuracy", "Iterative magnitude pruning", self.target)
        save(fig, out_dir / "lottery.png")
        control = out_dir / "control" / "metrics.json"
        if control.exists():
            epochs = json.loads(control.read_text())["epochs"]
            fig, ax = new_axes((6, 4))
            for key in ("test/acc", "train/acc"):
                if epochs and key in epochs[0]:
                    ax.plot([e["epoch"] + 1 for e in epochs], [e[key] for e in epochs], marker=".", label=key)
            decorate(ax, "epoch", "accuracy", "Control: winning mask, fresh random init", self.target)
            save(fig, out_dir / "control_curve.png")
