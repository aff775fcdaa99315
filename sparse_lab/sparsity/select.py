"""Which entries to keep, given scores: global top-k, per layer, by a layer-wise density
distribution (uniform, ER, ERK with the dense cap), or above a percentile. Exact counts.

Every function takes ``{name: score}`` (higher is kept first) and optional ``active`` masks
(inactive entries are never chosen: masks only shrink), and returns ``{name: bool mask}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from sparse_lab.checks import SCOPES
from sparse_lab.errors import ConfigError

Scores = Mapping[str, Tensor]
Masks = dict[str, Tensor]


def _flat(scores: Scores, active: Scores | None) -> tuple[Tensor, int]:
    """All scores in one vector, inactive entries ranked last; the number of active entries."""
    flat = torch.cat([s.detach().reshape(-1).float() for s in scores.values()])
    if active is None:
        return flat, flat.numel()
    on = torch.cat([active[n].reshape(-1) for n in scores])
    return torch.where(on, flat, torch.full_like(flat, -math.inf)), int(on.sum())


def _split(chosen: Tensor, scores: Scores) -> Masks:
    parts = chosen.split([s.numel() for s in scores.values()])
    return {n: part.view(s.shape) for (n, s), part in zip(scores.items(), parts)}


def keep_top(scores: Scores, keep: int, active: Scores | None = None) -> Masks:
    """Keep the ``keep`` highest scores over all tensors together, among the active entries.

    Ties are broken by position (first in name order, then flattened order), so the count is exact;
    ``keep`` above the active count keeps every active entry. NaN scores rank last.
    """
    flat, n_active = _flat(scores, active)
    if not 0 <= keep <= flat.numel():
        raise ValueError(f"keep={keep} is outside [0, {flat.numel()}]")
    keep = min(keep, n_active)
    flat = torch.nan_to_num(flat, nan=-math.inf)
    order = torch.argsort(flat, descending=True, stable=True)
    chosen = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    chosen[order[:keep]] = True
    return _split(chosen, scores)


def keep_top_counts(scores: Scores, counts: Mapping[str, int], active: Scores | None = None) -> Masks:
    """Per tensor ``name``, keep its ``counts[name]`` highest active scores."""
    return {n: keep_top({n: s}, counts[n], None if active is None else {n: active[n]})[n] for n, s in scores.items()}


def layer_counts(shapes: Mapping[str, Sequence[int]], density: float, distribution: str = "uniform") -> dict[str, int]:
    """How many entries each tensor keeps so that ``density`` of all entries is kept, exactly.

    ``uniform``: the same density in every tensor. ``er`` (Erdos-Renyi, Mocanu et al.): density
    proportional to ``(n_in + n_out) / (n_in n_out)``; ``erk`` (Evci et al.): to
    ``sum(shape) / prod(shape)``, kernel dimensions included. One factor scales them all; while a
    tensor's density would exceed 1, the densest is kept dense and the factor is solved again over
    the rest (google-research/rigl ``sparse_utils``). Rounding is settled by largest remainder, so the
    total is ``round(density * sum of sizes)``.
    """
    if not 0 <= density <= 1:
        raise ConfigError(f"density={density} is outside [0, 1]")
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    total = round(density * sum(sizes.values()))
    if distribution == "uniform":
        raw = {n: density * sizes[n] for n in sizes}
    elif distribution in ("er", "erk"):
        def weight(shape: Sequence[int]) -> float:
            dims = shape[:2] if distribution == "er" else shape
            return sum(dims) / math.prod(dims)

        dense: set[str] = set()
        while True:
            free = total - sum(sizes[n] for n in dense)
            denom = sum(weight(shapes[n]) * sizes[n] for n in sizes if n not in dense)
            eps = free / denom if denom > 0 else 0.0
            over = [n for n in sizes if n not in dense and eps * weight(shapes[n]) > 1]
            if not over:
                break
            top = max(weight(shapes[n]) for n in over)  # the densest first: the others may fit once it is dense
            dense |= {n for n in over if weight(shapes[n]) == top}
        raw = {n: float(sizes[n]) if n in dense else eps * weight(shapes[n]) * sizes[n] for n in sizes}
    else:
        raise ConfigError(f"distribution={distribution!r} is not one of uniform, er, erk")
    counts = {n: min(sizes[n], math.floor(r)) for n, r in raw.items()}
    short = total - sum(counts.values())
    for n in sorted(raw, key=lambda n: (-(raw[n] - math.floor(raw[n])), list(raw).index(n))):
        if short <= 0:
            break
        if counts[n] < sizes[n]:
            counts[n] += 1
            short -= 1
    return counts


def select(scores: Scores, density: float, scope: str = "global", active: Scores | None = None) -> Masks:
    """Keep ``density`` of all entries by score: ``global`` (one threshold over all tensors, exact
    total ``round(density N)``), ``layer`` / ``uniform`` (``round(density n)`` per tensor), ``er``,
    ``erk`` (per-tensor counts from :func:`layer_counts`). Only active entries are chosen."""
    if scope == "global":
        return keep_top(scores, round(density * sum(s.numel() for s in scores.values())), active)
    if scope in ("layer", "uniform"):
        return keep_top_counts(scores, {n: round(density * s.numel()) for n, s in scores.items()}, active)
    if scope in ("er", "erk"):
        return keep_top_counts(scores, layer_counts({n: tuple(s.shape) for n, s in scores.items()}, density, scope), active)
    raise ConfigError(f"pruning scope={scope!r} is not one of {', '.join(SCOPES)}")


def keep_above_percentile(scores: Scores, percent: float, active: Scores | None = None) -> Masks:
    """Keep ``score >= percentile(active scores of all tensors, percent)``: one global threshold,
    linear interpolation, strictly smaller scores dropped (SPEC section 2's one-shot and IMP rule).
    Inactive entries stay dropped."""
    if not 0 <= percent <= 100:
        raise ConfigError(f"percent={percent} is outside [0, 100]")
    active = active or {n: torch.ones_like(s, dtype=torch.bool) for n, s in scores.items()}
    pool = torch.cat([s.detach().reshape(-1)[active[n].reshape(-1)] for n, s in scores.items()]).double()
    threshold = torch.quantile(pool, percent / 100.0, interpolation="linear")
    return {n: (s.detach().double() >= threshold) & active[n] for n, s in scores.items()}


def drop_and_grow(
    active: Scores, drop_scores: Scores, grow_scores: Scores, fraction: float
) -> tuple[Masks, int]:
    """Dynamic sparse training's mask update, per tensor: drop ``floor(fraction * active)`` active
    entries of the lowest ``drop_scores``, then grow as many of the highest ``grow_scores`` among the
    entries not kept (a just-dropped one may come back). Every tensor keeps its count.

    Returns the new masks and the number of entries dropped (= grown) in all."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"drop fraction {fraction} is outside [0, 1]")
    out, moved = {}, 0
    for n, mask in active.items():
        count = int(mask.sum())
        k = math.floor(fraction * count)
        keep = keep_top({n: drop_scores[n]}, count - k, {n: mask})[n]
        grow = keep_top({n: grow_scores[n]}, k, {n: ~keep})[n]
        out[n] = keep | grow
        moved += k
    return out, moved


def shuffle_within_layers(masks: Scores, generator: torch.Generator) -> Masks:
    """Each tensor's mask with its entries randomly permuted: the same count per layer, new positions
    (Frankle et al. 2021's layer-shuffle control)."""
    out = {}
    for n, mask in masks.items():
        order = torch.randperm(mask.numel(), generator=generator).to(mask.device)
        out[n] = mask.reshape(-1)[order].view(mask.shape)
    return out
