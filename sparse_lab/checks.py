"""Value checks shared by the up-front config validation and the constructors that own the values.

Imports nothing heavier than :mod:`math`, so that models, methods and callbacks can check their own
arguments and :mod:`sparse_lab.validation` can use the same predicates and message format.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from sparse_lab.errors import ConfigError

# How a pruning rule spreads its keep count over layers (sparse_lab.sparsity.select): one global
# ranking, the same fraction per layer, or a layer-wise density (uniform, ER, ERK).
SCOPES = ("global", "layer", "uniform", "er", "erk")
# The MLP's weight initializations (sparse_lab.models.mlp).
INITS = ("torch", "glorot_uniform", "glorot_normal", "variance_scaling")


def is_int(v: Any, minimum: int = 0) -> bool:
    """An int (not a bool) >= ``minimum``."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def is_number(v: Any, low: float = -math.inf, high: float = math.inf, open_low: bool = False) -> bool:
    """A finite int or float (not a bool) in ``[low, high]`` (``(low, high]`` with ``open_low``)."""
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        return False
    return (v > low if open_low else v >= low) and v <= high


def is_int_list(v: Any, minimum: int = 1, empty: bool = False) -> bool:
    """A list or tuple (or Hydra ListConfig) of ints >= ``minimum``, non-empty unless ``empty``."""
    if isinstance(v, (str, bytes, Mapping)) or not isinstance(v, Iterable):
        return False
    items = list(v)
    return (empty or bool(items)) and all(is_int(x, minimum) for x in items)


def invalid(key: str, value: Any, valid: str) -> str:
    """The one message format for a bad value: ``key=value is invalid: it must be <valid>``."""
    return f"{key}={value!r} is invalid: it must be {valid}"


def require(ok: bool, key: str, value: Any, valid: str) -> None:
    """Raise :class:`ConfigError` naming ``key``, ``value`` and what a valid value is, unless ``ok``."""
    if not ok:
        raise ConfigError(invalid(key, value, valid))


def one_of(key: str, value: Any, allowed: Iterable[Any]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``allowed`` (named in the message)."""
    allowed = tuple(allowed)
    require(value in allowed, key, value, "one of: " + ", ".join("null" if a is None else str(a) for a in allowed))
