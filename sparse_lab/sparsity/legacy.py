"""Files written by the earlier torch.nn.utils.prune-based code, converted to plain weights and masks.

That code saved a pruned layer's ``weight`` as ``weight_orig`` (the raw values) and ``weight_mask``
(0/1); its lottery tickets listed the masks by position instead of by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

ORIG, MASK = "weight_orig", "weight_mask"


def convert_pruned_state_dict(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(state_dict with plain weights, {"<module>.weight": bool mask})``: every ``X.weight_orig``
    and ``X.weight_mask`` pair becomes ``X.weight = weight_orig * weight_mask``. A state dict without
    such keys comes back unchanged, with no masks."""
    out: dict[str, Tensor] = {}
    masks: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.endswith(MASK):
            prefix = key[: -len(MASK)]
            orig = state_dict.get(prefix + ORIG)
            if orig is None:
                raise ValueError(f"{key} has no {prefix + ORIG} beside it: not a checkpoint of sparse_lab's pruning")
            out[prefix + "weight"] = orig * value
            masks[prefix + "weight"] = value.bool()
        elif not key.endswith(ORIG):
            out[key] = value
    return out, masks


def masks_by_name(masks: Sequence[Tensor] | Mapping[str, Tensor], params: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Masks keyed by parameter name: a ticket's old position-ordered list is matched to ``params``
    (the prunable parameters by name, in model order), and refused unless every shape matches."""
    if isinstance(masks, Mapping):
        return dict(masks)
    names = list(params)
    if len(masks) != len(names) or any(tuple(m.shape) != tuple(params[n].shape) for m, n in zip(masks, names)):
        raise ValueError(
            f"the ticket's {len(masks)} masks (saved by position by an earlier sparse_lab) do not match this model's "
            f"{len(names)} prunable parameters {names}: run it with the model it was made with"
        )
    return {n: m.bool() for n, m in zip(names, masks)}
