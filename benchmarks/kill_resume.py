"""Fault injection: SIGKILL a run at random moments, resume it, and count the bit-identical endings.

For each method, one uninterrupted run is the reference; then each trial starts the same run, kills
it with SIGKILL, resumes it with ``resume=RUN_DIR`` and compares the ending with the reference. The
trials cycle through three kinds of kill:

- ``random``: from outside, at a random moment after the first checkpoint (``rw_target``) or the
  first finished round (``lottery``) appeared, whatever the run was doing then;
- ``validation``: from inside, at a random validation batch of a random epoch (tests.helpers.KillInValidation);
- ``torn``: like ``random``, then the newest checkpoint is cut in half, as a kill during a
  non-atomic write would leave it (the run's own writes are atomic: write beside, then rename).

Bit-identical: ``rw_target``: every tensor of the final ``last.ckpt`` state dict, the per-epoch rows
of metrics.json (timings aside) and the test metrics; ``lottery``: lottery.json (every round's and
the control's results) and the last round's ticket (masks, rewound and trained weights)::

    python benchmarks/kill_resume.py --trials 10           # both methods -> benchmarks/results/kill_resume.json
    python benchmarks/kill_resume.py --methods rw_target --trials 3
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from benchmarks.results_io import save_result  # noqa: E402
from sparse_lab import run_record  # noqa: E402

COMMON = ["data=synthetic", "hardware=cpu", "data.train_size=2048", "data.val_size=256", "data.eval_batch_size=64",
          "data.test_each_epoch=true",
          "callbacks.progress_bar=null", "+trainer.enable_progress_bar=false", "logger=null"]
METHODS: dict[str, list[str]] = {
    "rw_target": ["method=rw_target", "epochs=3", "paths=200"],
    "lottery": ["method=lottery", "epochs=2", "model.hidden=[64,32]", "method.protocol.rounds=4",
                "method.protocol.round_epoch_cap=2", "target_acc=null"],
}
KINDS = ("random", "validation", "torn")
TIMING = {"train_time_s", "epoch_time_s", "peak_rss_mb", "peak_cuda_mb"}


def start(args: list[str], run_dir: Path) -> subprocess.Popen:
    log = open(run_dir.with_suffix(".log"), "w")
    return subprocess.Popen([sys.executable, "-m", "sparse_lab", *args, f"hydra.run.dir={run_dir}"],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


def run(args: list[str], run_dir: Path) -> int:
    return start(args, run_dir).wait()


def ending(method: str, run_dir: Path, previous: Path | None = None) -> dict[str, Any]:
    """What a run ended with, for comparison (a lottery round trained by the run it resumed, or the weights of a
    resume that had no step left to train: from ``previous``, the killed run)."""
    if method == "lottery":
        state = json.loads((run_dir / "lottery.json").read_text())
        last = f"round_{state['rounds'][-1]['round']:02d}"
        ticket_path = run_dir / last / "ticket.pt"
        ticket = torch.load(ticket_path if ticket_path.is_file() or previous is None else previous / last / "ticket.pt")
        control = torch.load(run_dir / "control" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        tensors = {f"masks.{i}": t for i, t in enumerate(ticket["masks"])}
        tensors |= {f"{k}.{n}": t for k in ("initial", "trained") for n, t in ticket[k].items()}
        return {"json": state, "tensors": tensors | {f"control.{n}": t for n, t in control.items()}}
    record = json.loads((run_dir / "metrics.json").read_text())
    rows = [{k: v for k, v in r.items() if k not in TIMING} for r in record["epochs"]]
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file() and previous is not None:  # killed after its last step: the resume trained none
        last = previous / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=False)["state_dict"]
    return {"json": {"rows": rows, "test": record["test"]}, "tensors": state}


def identical(a: dict[str, Any], b: dict[str, Any]) -> bool:
    ta, tb = a["tensors"], b["tensors"]
    return a["json"] == b["json"] and ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def ready(method: str, run_dir: Path) -> bool:
    """Whether the run has something to resume from."""
    return (run_dir / "lottery.json").is_file() if method == "lottery" else (run_dir / "checkpoints" / "last.ckpt").is_file()


def newest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted(run_dir.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime_ns)
    return found[-1] if found else None


def trial(method: str, args: list[str], kind: str, run_dir: Path, span_s: float, rng: random.Random) -> dict[str, Any]:
    """Start, kill, resume; what happened."""
    epochs = int(next(a for a in args if a.startswith("epochs=")).split("=")[1])
    if kind == "validation":
        kill = ["+callbacks.kill._target_=tests.helpers.KillInValidation", f"+callbacks.kill.batch={rng.randrange(4)}"]
        if method == "lottery":  # in a round after the first, which leaves lottery.json to resume from
            rounds = int(next(a for a in args if a.startswith("method.protocol.rounds=")).split("=")[1])
            name, epoch = f"round_{rng.randrange(1, rounds):02d}", rng.randrange(2)
            kill.append(f"+callbacks.kill.run_name={name}")
        else:  # epoch 0's kill would leave no checkpoint to resume from
            name, epoch = "", rng.randrange(1, epochs)
        code = start([*args, *kill, f"+callbacks.kill.epoch={epoch}"], run_dir).wait()
        where = f"validation of epoch {epoch} {name}".strip()
    else:
        proc = start(args, run_dir)
        while not ready(method, run_dir) and proc.poll() is None:
            time.sleep(0.02)
        delay = rng.uniform(0, span_s)
        time.sleep(delay)
        proc.kill()
        code = proc.wait()
        where = f"{delay:.2f} s after the first {'round ended' if method == 'lottery' else 'checkpoint'}"
    record = run_record.read_run(run_dir)
    if code == 0 or (record or {}).get(run_record.STATUS) == run_record.COMPLETED:
        # a kill after the run had written its final record (while the process shut down) ended nothing
        return {"kind": kind, "where": where, "killed": False}
    torn = None
    if kind == "torn":
        torn = newest_checkpoint(run_dir)
        if torn is not None:
            data = torn.read_bytes()
            torn.write_bytes(data[: len(data) // 2])
    resumed = run_dir.with_name(run_dir.name + "_resumed")
    rc = run([*args, f"resume={run_dir}"], resumed)
    return {"kind": kind, "where": where, "killed": True, "torn": str(torn.relative_to(run_dir)) if torn else None,
            "resume_exit_code": rc, "resumed_dir": resumed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--trials", type=int, default=10, help="kills per method")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill moments")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "kill_resume.json"))
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    result: dict[str, Any] = {"trials": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            cmd = [*COMMON, *METHODS[method]]
            whole = Path(tmp) / f"{method}_whole"
            t0 = time.perf_counter()
            assert run(cmd, whole) == 0, f"the uninterrupted {method} run failed: see {whole}.log"
            reference = ending(method, whole)
            # the kill window: from the end of the first epoch (round) to the end of the run
            end = (whole / "metrics.json").stat().st_mtime
            if method == "lottery":
                first = min(p.stat().st_mtime for p in whole.glob("round_*/ticket.pt"))
            else:  # epoch 0's checkpoint is replaced by later ones: its end from the fit time
                epochs = int(next(a for a in cmd if a.startswith("epochs=")).split("=")[1])
                first = end - json.loads((whole / "metrics.json").read_text())["fit_time_s"] * (1 - 1 / epochs)
            span = max(end - first, 0.5)
            print(f"{method}: reference run {time.perf_counter() - t0:.1f} s, kill window {span:.2f} s", flush=True)
            rows, done = [], 0
            while done < args.trials:
                kind = KINDS[done % len(KINDS)]
                out = trial(method, cmd, kind, Path(tmp) / f"{method}_{len(rows)}", span, rng)
                if not out["killed"]:  # the run finished before the kill: draw again
                    print(f"  (finished before the kill {out['where']}: drawn again)", flush=True)
                    rows.append(out)
                    continue
                resumed = out.pop("resumed_dir")
                killed_dir = Path(tmp) / f"{method}_{len(rows)}"
                out["identical"] = out["resume_exit_code"] == 0 and identical(reference, ending(method, resumed, killed_dir))
                rows.append(out)
                done += 1
                print(f"  {done:2d} {kind:10s} {out['where']:45s} torn={out['torn']} -> resume exit {out['resume_exit_code']}, "
                      f"{'bit-identical' if out['identical'] else 'DIFFERENT'}", flush=True)
            killed = [r for r in rows if r["killed"]]
            result["trials"][method] = rows
            result[method] = {"kills": len(killed), "bit_identical": sum(r["identical"] for r in killed)}
    result["command"] = "python benchmarks/kill_resume.py " + " ".join(argv if argv is not None else sys.argv[1:])
    save_result(result, args.out, summary=[*args.methods, "command"])
    return 0 if all(result[m]["kills"] == result[m]["bit_identical"] for m in args.methods) else 1


if __name__ == "__main__":
    sys.exit(main())
