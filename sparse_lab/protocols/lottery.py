"""Iterative magnitude pruning with rewinding (Frankle & Carbin), and its control (random reinit or layer-shuffled mask)."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor, nn

from sparse_lab import run_record
from sparse_lab.atomic import atomic_torch_save, atomic_write_text
from sparse_lab.callbacks.masking import MaskEnforcer, inner_model
from sparse_lab.errors import ConfigError
from sparse_lab.models.reinit import reinitialize, seeded
from sparse_lab.protocols.base import Protocol, TrainerFactory
from sparse_lab.protocols.train import fit_and_test
from sparse_lab.report.figures import lottery_figures
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


_write_run_record = rank_zero_only(run_record.write_run)  # global rank 0 only


@dataclass
class _Job:
    """What every fit of one lottery run shares."""

    make_trainer: TrainerFactory
    module: L.LightningModule
    datamodule: L.LightningDataModule
    out_dir: Path
    model: nn.Module
    masks: MaskSet


class LotteryTicket(Protocol):
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
    permuted within each layer (same counts; Frankle et al. 2021); ``false``: none. The reinit
    control's init and training draw from the global RNGs seeded with ``control_seed``, which are
    restored afterwards.

    Data parallel: the rounds' fits and tests are distributed, the protocol itself runs in the main
    process (ddp_spawn) or, with externally started processes (ddp_multinode), on every rank, with
    the same decisions everywhere (they depend on test metrics reduced over ranks); only global
    rank 0 writes files, and nothing written in a round is read back in it.

    Written as it goes: ``lottery.json`` (one record per round, then the control), each round's
    run dir ``round_NN/`` (metrics.json, TensorBoard, checkpoints) and ``round_NN/ticket.pt``
    (masks, the rewound initial weights and the trained weights), ``theta0.pt``, the control's run
    dir ``control/``; at the end the run record ``metrics.json`` (the winner's test metrics and the
    whole ``lottery`` state) and the figures ``lottery.png`` and ``control_curve.png``. ``resume=RUN_DIR`` continues after the last
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
        """``resume`` must be the run dir of an interrupted lottery run (it holds ``lottery.json``)."""
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

    # ---- the steps of a run ----
    def _train_round(self, job: _Job, name: str, dense: bool, extra: list[L.Callback] | None = None) -> tuple[dict[str, Any], Path]:
        """One fit and test in ``out_dir/name`` (dense: for the trainer's epochs; else for at most
        ``round_epoch_cap`` epochs, stopping at the target); its result and its run dir."""
        run_dir = job.out_dir / name
        trainer = job.make_trainer(run_dir, (extra or []) + ([] if dense else self._round_stop()))
        if not dense:
            trainer.fit_loop.max_epochs = self.round_epoch_cap
        final = fit_and_test(trainer, job.module, job.datamodule)
        epochs = len(run_record.epoch_rows(run_record.read_run(run_dir))) or trainer.current_epoch
        acc = final.get("test/acc", float("nan"))
        return {"epochs": epochs, **final, "reached": None if self.target is None else acc >= self.target}, run_dir

    def _start(self, job: _Job) -> tuple[dict[str, Tensor], dict[str, Any], int]:
        """A fresh run: theta_0 (the weights as given), an empty state, round 0 next."""
        theta0 = {k: v.clone() for k, v in job.model.state_dict().items()}
        return theta0, {"prune_percent": self.prune_percent, "target": self.target, "rounds": []}, 0

    def _resume(self, job: _Job, previous: Path) -> tuple[dict[str, Tensor], dict[str, Any], int]:
        """The interrupted run in ``previous``: its theta_0 and state, the masks and trained weights of
        its last finished round loaded, and the round to continue with (past the end after a miss
        that stops the rounds; the control, if any, is run again)."""
        theta0 = torch.load(previous / "theta0.pt")
        state = json.loads((previous / "lottery.json").read_text())
        state.pop("control", None)
        if not state["rounds"]:  # stopped in round 0: it starts again from theta_0
            self._rewind(job.model, theta0, job.masks)
            return theta0, state, 0
        last = state["rounds"][-1]
        ticket = torch.load(previous / f"round_{last['round']:02d}" / "ticket.pt")
        job.masks.set(masks_by_name(ticket["masks"], job.masks.params))
        self._rewind(job.model, ticket["trained"], job.masks)
        start = last["round"] + 1
        if self.stop_on_miss and last.get("reached") is False:
            start = self.rounds
        return theta0, state, start

    def _prune_and_rewind(self, job: _Job, theta0: dict[str, Tensor]) -> None:
        """Drop ``prune_percent`` % of the remaining weights by magnitude, then rewind to theta_0."""
        job.masks.set(keep_above_percentile(scores.magnitude(job.masks), self.prune_percent, job.masks.masks))
        self._rewind(job.model, theta0, job.masks)

    def _round(self, job: _Job, k: int, theta0: dict[str, Tensor]) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """Round ``k``: prune and rewind (k > 0), train, save its ticket. Its record for ``lottery.json``
        and theta_0 (after round 0 with late rewinding: the snapshot of its step ``rewind_step``)."""
        if k > 0:
            self._prune_and_rewind(job, theta0)
        initial = self._params(job.model)
        rewind = k == 0 and self.rewind_step > 0
        snapshot = _Snapshot(self.rewind_step, job.out_dir / "round_00" / "rewind_snapshot.pt") if rewind else None
        extra = [snapshot] if snapshot else [MaskEnforcer(job.masks)] if k > 0 else []
        result, run_dir = self._train_round(job, f"round_{k:02d}", dense=k == 0, extra=extra)
        if snapshot is not None:
            snapped = snapshot.result()
            if snapped is None:
                raise ConfigError(f"rewind_step={self.rewind_step} is past the end of round 0's training")
            theta0 = snapped
            _save(theta0, job.out_dir / "theta0.pt")
        masks = job.masks
        _save({"masks": masks.state_dict(), "initial": initial, "trained": self._params(job.model)}, run_dir / "ticket.pt")
        return {"round": k, "kept": masks.kept, "sparsity": 1 - masks.kept / masks.total, **result}, theta0

    @staticmethod
    def _winner(state: dict[str, Any]) -> dict[str, Any]:
        """The last pruned round that reached the target (with no target: the last round); the last
        round when none did."""
        winners = [r for r in state["rounds"] if r["reached"] is not False and r["round"] > 0]
        return (winners or state["rounds"])[-1]

    def _winning_masks(self, job: _Job, round_masks: dict[int, dict[str, Tensor]], winner: dict[str, Any],
                       resume: str | None) -> dict[str, Tensor]:
        winning = round_masks.get(winner["round"])
        if winning is None:  # a round of the run this one resumed: its ticket is in that run's dir
            saved = torch.load(Path(resume) / f"round_{winner['round']:02d}" / "ticket.pt")["masks"]
            winning = masks_by_name(saved, job.masks.params)
        return winning

    def _control_run(self, job: _Job, winner: dict[str, Any], winning: dict[str, Tensor], theta0: dict[str, Tensor],
                     template: nn.Module) -> dict[str, Any]:
        """Train the control of the winning ticket in ``control/``; its record for ``lottery.json``."""
        if self.control == "shuffle":
            job.masks.set(shuffle_within_layers(winning, torch.Generator().manual_seed(self.control_seed)))
            self._rewind(job.model, theta0, job.masks)
            result = self._train_control(job)
        else:
            with seeded(self.control_seed):  # the fresh init and the control's training, as seeded before
                reinitialize(template)
                job.masks.set(winning)
                self._rewind(job.model, template.state_dict(), job.masks)
                result = self._train_control(job)
        kind = "shuffle" if self.control == "shuffle" else "reinit"
        return {"kind": kind, "round": winner["round"], "kept": winner["kept"], "sparsity": winner["sparsity"], **result}

    def _train_control(self, job: _Job) -> dict[str, Any]:
        return self._train_round(job, "control", dense=False, extra=[MaskEnforcer(job.masks)])[0]

    def run(
        self,
        make_trainer: TrainerFactory,
        module: L.LightningModule,
        datamodule: L.LightningDataModule,
        out_dir: Path,
        resume: str | None = None,
    ) -> dict[str, float]:
        """The rounds from the first one not finished, the control, then ``metrics.json`` and the
        figures; the winner's test metrics."""
        model = inner_model(module)
        job = _Job(make_trainer, module, datamodule, out_dir, model, MaskSet(model))
        template = copy.deepcopy(model)  # for the control's fresh init
        theta0, state, start = self._resume(job, Path(resume)) if resume else self._start(job)
        _save(theta0, out_dir / "theta0.pt")
        _write_json(state, out_dir / "lottery.json")  # from the start: a run stopped in round 0 can resume
        round_masks: dict[int, dict[str, Tensor]] = {}

        for k in range(start, self.rounds):
            record, theta0 = self._round(job, k, theta0)
            state["rounds"].append(record)
            round_masks[k] = job.masks.state_dict()
            _write_json(state, out_dir / "lottery.json")
            if self.stop_on_miss and record["reached"] is False and k > 0:
                break

        winner = self._winner(state)
        if self.control and winner["round"] > 0:
            winning = self._winning_masks(job, round_masks, winner, resume)
            state["control"] = self._control_run(job, winner, winning, theta0, template)
            _write_json(state, out_dir / "lottery.json")
        state["winner"] = winner
        _write_json(state, out_dir / "lottery.json")
        test = {k: v for k, v in winner.items() if k.startswith("test/")}
        _write_run_record(out_dir, run_record.completed(test, lottery=state))
        if rank_zero_only.rank == 0:
            lottery_figures(state, out_dir, self.target)
        return test
