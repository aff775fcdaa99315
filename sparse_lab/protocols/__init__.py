"""Work that spans one or several fits: the default Train, one-shot pruning sweeps (later: lottery rounds)."""

from sparse_lab.protocols.lottery import LotteryTicket
from sparse_lab.protocols.oneshot import OneShotPruning
from sparse_lab.protocols.train import Train, find_callback

__all__ = ["LotteryTicket", "OneShotPruning", "Train", "find_callback"]
