"""Work that spans one or several fits, each a :class:`Protocol`: the default :class:`Train` (one fit,
then the test set), :class:`OneShotPruning` (train dense, then test the net pruned at several levels)
and :class:`LotteryTicket` (iterative magnitude pruning with rewinding, then a control).

A config picks one with ``method.protocol`` (``_target_``); the app calls its ``check_resume`` and
then its ``run``. Protocols write the run record through :mod:`sparse_lab.run_record` and draw
through :mod:`sparse_lab.report`.
"""

from sparse_lab.protocols.base import Protocol, TrainerFactory
from sparse_lab.protocols.lottery import LotteryTicket
from sparse_lab.protocols.oneshot import OneShotPruning
from sparse_lab.protocols.train import Train, find_callback

__all__ = ["LotteryTicket", "OneShotPruning", "Protocol", "Train", "TrainerFactory", "find_callback"]
