"""Magnitude pruning: which weights to keep, as masks over a model's prunable tensors.

Masks are enforced with ``torch.nn.utils.prune`` (``weight = weight_orig * weight_mask``): forward,
gradients and every optimizer see the product, so momentum or weight decay moving ``weight_orig``
can never bring a pruned weight back. Pruning again multiplies the masks: they only shrink.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def prunable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every module whose ``weight`` has more than one dimension (Linear, Conv);
    biases and normalization layers are never pruned."""
    out = []
    for name, module in model.named_modules():
        if isinstance(module, NORM_LAYERS):
            continue
        weight = getattr(module, "weight_orig", getattr(module, "weight", None))
        if isinstance(weight, Tensor) and weight.dim() > 1:
            out.append((name, module))
    return out


def current_weights(modules: Sequence[nn.Module]) -> list[Tensor]:
    """The effective weights, ``weight_orig * weight_mask`` of a pruned module.

    Computed here rather than read from ``module.weight``, which torch.nn.utils.prune refreshes
    only on the next forward pass.
    """
    return [
        (m.weight_orig * m.weight_mask).detach() if hasattr(m, "weight_mask") else m.weight.detach() for m in modules
    ]


def current_masks(modules: Sequence[nn.Module]) -> list[Tensor]:
    """The boolean masks in force (all True for a module that was never pruned)."""
    return [
        m.weight_mask.bool() if hasattr(m, "weight_mask") else torch.ones_like(m.weight, dtype=torch.bool)
        for m in modules
    ]


def keep_largest(weights: Sequence[Tensor], keep: int, masks: Sequence[Tensor] | None = None) -> list[Tensor]:
    """Masks keeping the ``keep`` largest ``|w|`` over all tensors together, among the active ones.

    Ties are broken by position (first in the flattened order wins), so the count is exact.
    """
    flat = torch.cat([w.reshape(-1).abs() for w in weights])
    if masks is not None:
        active = torch.cat([m.reshape(-1) for m in masks])
        flat = torch.where(active, flat, torch.full_like(flat, -1.0))  # pruned weights rank last
        keep = min(keep, int(active.sum()))
    if not 0 <= keep <= flat.numel():
        raise ValueError(f"keep={keep} is outside [0, {flat.numel()}]")
    order = torch.argsort(flat, descending=True, stable=True)
    chosen = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    chosen[order[:keep]] = True
    return [part.view_as(w) for part, w in zip(chosen.split([w.numel() for w in weights]), weights)]


def keep_largest_per_layer(weights: Sequence[Tensor], fraction: float, masks: Sequence[Tensor] | None = None) -> list[Tensor]:
    """Per tensor, keep the ``round(fraction * numel)`` largest ``|w|`` among its active weights."""
    masks = masks or [torch.ones_like(w, dtype=torch.bool) for w in weights]
    return [keep_largest([w], round(fraction * w.numel()), [m])[0] for w, m in zip(weights, masks)]


def percentile_masks(weights: Sequence[Tensor], percent: float, masks: Sequence[Tensor] | None = None) -> list[Tensor]:
    """Keep ``|w| >= percentile(|w| of the active weights of all tensors, percent)``.

    The reference's rule (SPEC section 2): one global threshold, linear interpolation, strictly
    smaller weights pruned. With ``masks``, only active weights count and pruned ones stay pruned.
    """
    masks = masks or [torch.ones_like(w, dtype=torch.bool) for w in weights]
    active = torch.cat([w.reshape(-1).abs()[m.reshape(-1)] for w, m in zip(weights, masks)]).double()
    threshold = torch.quantile(active, percent / 100.0, interpolation="linear")
    return [(w.abs().double() >= threshold) & m for w, m in zip(weights, masks)]


def apply_masks(modules: Sequence[nn.Module], masks: Sequence[Tensor]) -> None:
    """Enforce ``masks`` with ``torch.nn.utils.prune``; on an already pruned module they multiply.

    ``weight_orig`` keeps the place ``weight`` had among the module's parameters, so ``parameters()``
    (and so an optimizer's state, which is saved by position) has the same order pruned or not.
    """
    for module, mask in zip(modules, masks):
        first = not hasattr(module, "weight_mask")
        order = list(module._parameters)
        prune.custom_from_mask(module, "weight", mask.to(module.weight.dtype))
        if first:  # torch re-registers the parameter as weight_orig, after the others: put it back
            params = module._parameters
            reordered = {n: params[n] for n in ("weight_orig" if n == "weight" else n for n in order)}
            params.clear()
            params.update(reordered)
        # prune leaves `weight` (= weight_orig * weight_mask, recomputed before every forward) as a plain
        # attribute with autograd history; hold it detached until then, so that the module can be sent to
        # other processes (ddp_spawn pickles the model into its workers).
        module.weight = module.weight.detach()


def restore_masks(model: nn.Module, state_dict: Mapping[str, Tensor]) -> int:
    """Install on ``model`` the pruning of a ``state_dict`` saved from a pruned copy of it.

    A pruned module saves ``weight_orig`` and ``weight_mask`` instead of ``weight``; loading such a
    state dict needs the same pruning in place first. Every ``<module>.weight_mask`` key whose module
    is not pruned yet gets its mask installed (the values are then overwritten by ``load_state_dict``
    anyway). Returns the number of modules pruned here.
    """
    installed = 0
    for key, mask in state_dict.items():
        if not key.endswith(".weight_mask") and key != "weight_mask":
            continue
        module = model.get_submodule(key[: -len("weight_mask")].rstrip("."))
        if not hasattr(module, "weight_mask"):
            apply_masks([module], [mask.to(module.weight.device).bool()])
            installed += 1
    return installed


def sparsity_report(names: Sequence[str], modules: Sequence[nn.Module]) -> dict[str, float]:
    """Share of zero-masked weights per layer (``sparsity/<name>``), globally (``sparsity/global``),
    and the number kept (``sparsity/kept``)."""
    masks = current_masks(modules)
    kept = [int(m.sum()) for m in masks]
    total = [m.numel() for m in masks]
    out = {f"sparsity/{name}": 1 - k / t for name, k, t in zip(names, kept, total)}
    out["sparsity/global"] = 1 - sum(kept) / sum(total)
    out["sparsity/kept"] = float(sum(kept))
    return out
