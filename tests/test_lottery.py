"""Lottery tickets: IMP counts, exact rewinding, fixed masks, the control, resume at the round."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

import sparse_lab.protocols.lottery as lottery_module
from sparse_lab.app import train
from sparse_lab.protocols.lottery import LotteryTicket, reinitialize, seeded
from tests.conftest import make_cfg
from tests.helpers import SimulatedCrash

LTH = ["method=lottery", "model.hidden=[8,4]", "epochs=2", "lr=1e-2", "data.val_size=0", "data.test_each_epoch=true",
       "method.protocol.rounds=4", "method.protocol.round_epoch_cap=2", "target_acc=0.3"]


def lottery(run: Path) -> dict:
    return json.loads((run / "lottery.json").read_text())


def test_rounds_prune_by_the_reference_counts_rewind_exactly_and_keep_masks(tmp_path: Path) -> None:
    final = train(make_cfg(tmp_path, *LTH))
    state = lottery(tmp_path)
    assert [r["kept"] for r in state["rounds"]] == [6344, 5075, 4060, 3248]
    assert all(r["reached"] for r in state["rounds"])
    theta0 = torch.load(tmp_path / "theta0.pt")
    previous = None
    for k in range(4):
        ticket = torch.load(tmp_path / f"round_{k:02d}" / "ticket.pt")
        assert list(ticket["masks"]) == ["net.1.weight", "net.3.weight", "net.5.weight"]  # masks by name
        assert sum(int(m.sum()) for m in ticket["masks"].values()) == state["rounds"][k]["kept"]
        for name, mask in ticket["masks"].items():
            assert torch.equal(ticket["initial"][name], theta0[name] * mask)  # rewound: theta_0, pruned entries 0
            assert (ticket["trained"][name][~mask] == 0).all()  # pruned: zero through training
            assert (ticket["trained"][name][mask] != theta0[name][mask]).any()  # the kept ones trained
        for name in ("net.1.bias", "net.3.bias", "net.5.bias"):
            assert torch.equal(ticket["initial"][name], theta0[name])
        if previous is not None:
            assert all(not (m & ~previous[n]).any() for n, m in ticket["masks"].items())  # masks only shrink
        previous = ticket["masks"]
    control = state["control"]
    assert control["round"] == 3 and control["kept"] == 3248 and "test/acc" in control
    assert final["test/acc"] == pytest.approx(state["rounds"][-1]["test/acc"])
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["status"] == "completed" and summary["lottery"]["winner"]["round"] == 3
    for png in ("lottery.png", "control_curve.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"


def test_a_missed_target_stops_the_rounds(tmp_path: Path) -> None:
    train(make_cfg(tmp_path, *LTH[:-1], "target_acc=1.0", "method.protocol.control=false"))
    state = lottery(tmp_path)
    assert len(state["rounds"]) == 2 and state["rounds"][1]["reached"] is False  # round 0 is dense training
    assert state["rounds"][1]["epochs"] == 2  # trained to the cap


def whole_and_crashed(tmp_path: Path) -> Path:
    """An uninterrupted lottery run in ``tmp_path/whole`` and one stopped at round 2's start: its dir."""
    train(make_cfg(tmp_path / "whole", *LTH, "method.protocol.control=false"))
    crashed = tmp_path / "crashed"
    with pytest.raises(SimulatedCrash):
        train(make_cfg(crashed, *LTH, "method.protocol.control=false",
                       "+callbacks.crash._target_=tests.helpers.CrashInRun", "+callbacks.crash.run_name=round_02"))
    return crashed


def test_resumed_lottery_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    crashed = whole_and_crashed(tmp_path)
    assert len(lottery(crashed)["rounds"]) == 2
    train(make_cfg(tmp_path / "resumed", *LTH, "method.protocol.control=false", f"resume={crashed}"))
    whole, resumed = lottery(tmp_path / "whole"), lottery(tmp_path / "resumed")
    assert resumed["rounds"] == whole["rounds"]
    a = torch.load(tmp_path / "whole" / "round_03" / "ticket.pt")["trained"]
    b = torch.load(tmp_path / "resumed" / "round_03" / "ticket.pt")["trained"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_late_rewinding_rewinds_to_the_weights_after_k_steps(tmp_path: Path) -> None:
    train(make_cfg(tmp_path, *LTH, "method.protocol.rounds=2", "method.protocol.control=false",
                   "method.protocol.rewind_step=3"))
    theta = torch.load(tmp_path / "theta0.pt")
    round0 = torch.load(tmp_path / "round_00" / "ticket.pt")
    round1 = torch.load(tmp_path / "round_01" / "ticket.pt")
    assert not torch.equal(theta["net.1.weight"], round0["initial"]["net.1.weight"])  # not theta_0 ...
    assert not torch.equal(theta["net.1.weight"], round0["trained"]["net.1.weight"])  # ... nor the trained weights
    masks = round1["masks"]
    assert all(torch.equal(round1["initial"][k], theta[k] * masks[k] if k in masks else theta[k]) for k in theta)


def test_a_lottery_run_of_the_old_prune_based_code_resumes_from_its_position_ordered_ticket(tmp_path: Path) -> None:
    crashed = whole_and_crashed(tmp_path)
    path = crashed / "round_01" / "ticket.pt"
    ticket = torch.load(path)
    theta0 = torch.load(crashed / "theta0.pt")
    # the old code listed the masks by position and kept theta_0's values under pruned weights
    ticket["trained"] = {k: torch.where(ticket["masks"][k], v, theta0[k]) if k in ticket["masks"] else v
                         for k, v in ticket["trained"].items()}
    ticket["masks"] = list(ticket["masks"].values())
    torch.save(ticket, path)
    train(make_cfg(tmp_path / "resumed", *LTH, "method.protocol.control=false", f"resume={crashed}"))
    assert lottery(tmp_path / "resumed")["rounds"] == lottery(tmp_path / "whole")["rounds"]
    a = torch.load(tmp_path / "whole" / "round_03" / "ticket.pt")["trained"]
    b = torch.load(tmp_path / "resumed" / "round_03" / "ticket.pt")["trained"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_seeded_draws_as_manual_seed_and_leaves_the_global_rng_as_it_was() -> None:
    torch.manual_seed(0)
    torch.rand(3)
    before = torch.get_rng_state()
    with seeded(1000):
        inside = torch.rand(5)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(1000)
    assert torch.equal(inside, torch.rand(5))


def test_the_reinit_control_draws_its_init_from_control_seed_and_leaves_the_global_rng_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, object] = {}
    control_run = LotteryTicket._control_run

    def spy_control(self: LotteryTicket, *args: object) -> dict:
        seen["before"] = torch.get_rng_state()
        out = control_run(self, *args)
        seen["after"] = torch.get_rng_state()
        return out

    def spy_reinit(model: torch.nn.Module) -> None:
        seen["fresh"] = copy.deepcopy(model)
        reinitialize(model)
        seen["init"] = {k: v.clone() for k, v in model.state_dict().items()}

    monkeypatch.setattr(LotteryTicket, "_control_run", spy_control)
    monkeypatch.setattr(lottery_module, "reinitialize", spy_reinit)
    train(make_cfg(tmp_path, *LTH[:-3], "method.protocol.rounds=2", "method.protocol.round_epoch_cap=1", "target_acc=null",
                   "method.protocol.control_seed=7"))
    assert "control" in lottery(tmp_path) and "init" in seen
    assert torch.equal(seen["before"], seen["after"])  # the control seeded nothing outside itself
    torch.manual_seed(7)  # the draws the protocol made with a global torch.manual_seed(control_seed) before
    reinitialize(seen["fresh"])
    assert all(torch.equal(v, seen["init"][k]) for k, v in seen["fresh"].state_dict().items())


def test_every_protocol_implements_the_protocol_base() -> None:
    from sparse_lab.protocols import OneShotPruning, Protocol, Train

    assert all(isinstance(p, Protocol) for p in (Train(), OneShotPruning(), LotteryTicket()))

    class Incomplete(Protocol):
        def check_resume(self, resume: str | None) -> None:
            pass

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()  # no run
