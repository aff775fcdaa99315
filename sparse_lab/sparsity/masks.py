"""The mask core: :class:`MaskSet` owns every pruning mask, keyed by parameter name.

Masks are enforced in place, without reparametrizing the module: a masked weight is a plain zero
in ``param`` itself, its gradient is zeroed before every optimizer step, and the optimizer's
per-parameter buffers are zeroed wherever a mask changes. Forward and backward run on the plain
weights, so pruning costs nothing there.

Also here: the small gradient helpers the random-walk masks use (``mask_gradients``,
``count_nonzero``, ``mask_optimizer_state``).
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from sparse_lab.errors import ConfigError

NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
# Optimizers whose step keeps a weight exactly 0 when it, its gradient and its state are 0 (momentum,
# (decoupled) weight decay and Adam's moments all stay 0): no weight masking needed after their steps.
KEEP_ZEROS = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)


def mask_gradients(params: Sequence[Tensor], masks: Sequence[Tensor]) -> None:
    """Zero every gradient entry whose mask is False, in one fused call over all tensors."""
    grads = [p.grad for p in params]
    if any(g is None for g in grads):
        raise ValueError("mask_gradients needs every parameter to have a gradient")
    torch._foreach_mul_(grads, list(masks))


# From this many entries on, a CPU float tensor is counted by the numba kernel (torch's
# count_nonzero took 106 us for a 256 x 784 float32 gradient on one thread here, the kernel 26 us);
# below it the call into numba costs more than it saves.
COMPILED_COUNT_FROM = 4096


def count_nonzero(tensors: Sequence[Tensor]) -> Tensor:
    """Nonzero entries per tensor, shape ``(len(tensors),)``, int64, without leaving the device."""
    if tensors and all(t.device.type == "cpu" for t in tensors):
        return torch.tensor([_count_on_cpu(t) for t in tensors], dtype=torch.int64)
    # count_nonzero per tensor beats torch._foreach_norm(ord=0), which has no fast kernel.
    return torch.stack([t.count_nonzero() for t in tensors])


def count_changed(now: Sequence[Tensor], before: Sequence[Tensor]) -> Tensor:
    """Entries where ``now[i]`` differs from ``before[i]``, summed over all pairs (a 0-d int64 tensor
    on their device): counted in one pass by the numba kernel for large CPU float tensors (a 4.6M
    weight MLP's parameters: no 18 MB difference tensor to allocate and scan), by ``ne`` elsewhere."""
    total, rest = 0, []
    for a, b in zip(now, before, strict=True):
        kernels = _counting_kernels(a, b)
        if kernels is not None:
            total += int(kernels._count_changed(a.detach().view(-1).numpy(), b.detach().view(-1).numpy()))
        else:
            rest.append(torch.ne(a, b).sum())
    counted = torch.tensor(total, dtype=torch.int64, device=now[0].device)
    return counted + torch.stack(rest).sum() if rest else counted


def _count_on_cpu(tensor: Tensor) -> int:
    kernels = _counting_kernels(tensor)
    if kernels is not None:
        return int(kernels._count_nonzero(tensor.detach().view(-1).numpy()))
    return int(tensor.count_nonzero())


def _counting_kernels(*tensors: Tensor) -> ModuleType | None:
    """The numba kernels where they count ``tensors`` (contiguous, at least
    :data:`COMPILED_COUNT_FROM` entries, and what :func:`~sparse_lab.sparsity.kernels._load.on_cpu`
    accepts), else None."""
    if tensors[0].numel() < COMPILED_COUNT_FROM or not all(t.is_contiguous() for t in tensors):
        return None
    from sparse_lab.sparsity.kernels._load import compiled, on_cpu  # the kernels package imports this module

    return compiled() if on_cpu(tensors) else None


def mask_optimizer_state(optimizer: torch.optim.Optimizer, params: Sequence[Tensor], masks: Sequence[Tensor]) -> None:
    """Zero the optimizer's per-parameter buffers (momentum, Adam moments) where ``masks`` is False."""
    for param, mask in zip(params, masks):
        for value in optimizer.state.get(param, {}).values():
            if isinstance(value, Tensor) and value.shape == param.shape:
                value.masked_fill_(~mask.bool(), 0)


def prunable_parameters(
    model: nn.Module, include: Sequence[str] | None = None, exclude: Sequence[str] = ()
) -> dict[str, nn.Parameter]:
    """The parameters a pruning method may mask, by name, in ``named_parameters`` order.

    Default: every ``weight`` with more than one dimension (Linear, Conv), never a bias or a
    normalization layer's. ``include`` / ``exclude``: shell patterns over parameter names
    (``"net.*.weight"``, ``"fc.weight"``) that replace the default choice / drop names from it.
    """
    norm_params = {id(p) for m in model.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)}
    out = {}
    for name, param in model.named_parameters():
        if include is None:
            chosen = name.rsplit(".", 1)[-1] == "weight" and param.dim() > 1 and id(param) not in norm_params
        else:
            chosen = any(fnmatch.fnmatchcase(name, pattern) for pattern in include)
        if chosen and not any(fnmatch.fnmatchcase(name, pattern) for pattern in exclude):
            out[name] = param
    return out


@torch.no_grad()
def _connectivity_copy(model: nn.Module, masks: Mapping[str, Tensor]) -> nn.Module:
    """A float64 copy of ``model`` whose masked weights are their 0/1 masks, every other weight 1,
    biases and running means 0, running variances 1, and max-pools averaging: a positive input
    reaches an output through exactly the paths of kept weights."""
    net = copy.deepcopy(model).double().eval()
    for name, param in net.named_parameters():
        if name in masks:
            param.copy_(masks[name])
        elif name.rsplit(".", 1)[-1] == "bias":
            param.zero_()
        else:
            param.fill_(1.0)
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            module.running_mean.zero_()
            module.running_var.fill_(1.0)
    for parent in list(net.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.MaxPool2d):
                setattr(parent, child_name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding, child.ceil_mode))
    return net


def effective_masks(model: nn.Module, masks: Mapping[str, Tensor], input_shape: Sequence[int]) -> dict[str, Tensor]:
    """The kept entries that lie on some path from the input to the output (Vysogorets & Kempe 2021):
    a kept weight whose input unit no input reaches, or whose output unit reaches no output, is
    effectively pruned. Found as the nonzero gradients of the output sum of a connectivity copy of
    ``model`` (see :func:`_connectivity_copy`) at an all-ones input of ``input_shape``."""
    net = _connectivity_copy(model, masks)
    named = dict(net.named_parameters())
    weights = [named[n] for n in masks]
    device = weights[0].device
    out = net(torch.ones((1, *input_shape), dtype=torch.float64, device=device))
    grads = torch.autograd.grad(out.sum(), weights)
    return {n: masks[n] & (g != 0) for n, g in zip(masks, grads)}


def layer_name(param_name: str) -> str:
    """The name a parameter's layer is logged under: ``net.1.weight`` -> ``net.1``."""
    return param_name[: -len(".weight")] if param_name.endswith(".weight") else param_name


class MaskSet:
    """Boolean masks over a model's prunable parameters, keyed by parameter name; the only owner of
    pruning masks.

    - :meth:`attach` an optimizer and the masks enforce themselves around its every step: the
      gradients are masked before it (after the dense gradient is kept, when
      ``keep_dense_grads`` is set) and the weights after it (see :meth:`attach`);
    - :meth:`update` shrinks or grows the masks during training, zeroing what is pruned and the
      optimizer state of every changed entry; a grown entry starts at ``grow_value``;
    - :meth:`state_dict` / :meth:`load_state_dict` by parameter name;
    - :meth:`sparsity` per layer and globally, and the kept count.

    The masks start all True (dense), or as given. ``include`` / ``exclude``: see
    :func:`prunable_parameters`.
    """

    def __init__(
        self,
        model: nn.Module,
        masks: Mapping[str, Tensor] | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
    ) -> None:
        self.model = model
        self._params = prunable_parameters(model, include, exclude)
        self.names = list(self._params)
        if not self.names:
            raise ConfigError(
                f"no parameter of {type(model).__name__} matches the mask's include={include} exclude={list(exclude)} "
                f"(the method's mask callback options): its parameters are {[n for n, _ in model.named_parameters()]}"
            )
        params = self.params
        self._factors: list[Tensor] | None = None  # masks in the parameters' dtype, for the per-step multiplies
        self.masks = {n: torch.ones_like(params[n], dtype=torch.bool) for n in self.names}
        self.keep_dense_grads = False
        self.dense_grads: dict[str, Tensor] | None = None
        self.version = 0  # counts changes of the masks (set, update), for whoever caches something built from them
        self._masked_before_step = False  # set by mask_gradients_early(): the dense gradient is already kept
        self._arrive_masked: tuple[frozenset[str], int] = (frozenset(), -1)  # names, and the masks' version they hold for
        self._optimizers: list[torch.optim.Optimizer] = []
        self._handles: list[RemovableHandle] = []
        if masks is not None:
            self.set(masks)

    # ---- views ----
    @property
    def masks(self) -> dict[str, Tensor]:
        """The boolean masks by parameter name, on their parameters' device: they follow a model
        moved after they were made (Lightning moves it to the GPU after the callbacks' ``setup``)."""
        masks, first = self._masks, self.names[0]
        if masks[first].device != self._params[first].device:
            self._masks = masks = {n: m.to(self._params[n].device) for n, m in masks.items()}
            self._factors = None
        return masks

    @masks.setter
    def masks(self, masks: dict[str, Tensor]) -> None:
        self._masks = masks

    @property
    def params(self) -> dict[str, nn.Parameter]:
        """The masked parameters by name."""
        return self._params

    def refresh(self) -> None:
        """Look the parameters up again by name (after a wrapper or strategy replaced them)."""
        named = dict(self.model.named_parameters())
        self._params = {n: named[n] for n in self.names}
        self._factors = None

    @property
    def total(self) -> int:
        """Entries under masks, kept or not."""
        return sum(m.numel() for m in self.masks.values())

    @property
    def kept(self) -> int:
        """Entries kept (mask True)."""
        return int(sum(int(m.sum()) for m in self.masks.values()))

    def weights(self) -> dict[str, Tensor]:
        """The masked parameters' current values (detached, not copied)."""
        return {n: p.detach() for n, p in self.params.items()}

    def sparsity(self, input_shape: Sequence[int] | None = None) -> dict[str, float]:
        """``sparsity/<layer>`` per masked tensor, ``sparsity/global`` and ``sparsity/kept``; with the
        model's ``input_shape``, also ``sparsity/effective`` (see :func:`effective_masks`)."""
        kept = {n: int(m.sum()) for n, m in self.masks.items()}
        out = {f"sparsity/{layer_name(n)}": 1 - kept[n] / self.masks[n].numel() for n in self.names}
        out["sparsity/global"] = 1 - sum(kept.values()) / self.total
        out["sparsity/kept"] = float(sum(kept.values()))
        if input_shape is not None:
            effective = effective_masks(self.model, self.masks, input_shape)
            out["sparsity/effective"] = 1 - sum(int(m.sum()) for m in effective.values()) / self.total
        return out

    # ---- changing the masks ----
    def _checked(self, masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
        if set(masks) != set(self.names):
            missing, extra = sorted(set(self.names) - set(masks)), sorted(set(masks) - set(self.names))
            raise ValueError(f"masks do not match the masked parameters: missing {missing}, unexpected {extra}")
        params = self.params
        out = {}
        for n in self.names:
            mask = masks[n]
            if tuple(mask.shape) != tuple(params[n].shape):
                raise ValueError(f"mask for {n} has shape {tuple(mask.shape)}, the parameter {tuple(params[n].shape)}")
            out[n] = mask.to(device=params[n].device, dtype=torch.bool)
        return out

    def set(self, masks: Mapping[str, Tensor]) -> None:
        """Replace the masks as they are; weights and optimizer state are not touched (see :meth:`apply`)."""
        self.masks = self._checked(masks)
        self._factors = None
        self.version += 1

    @torch.no_grad()
    def update(self, masks: Mapping[str, Tensor], grow_value: float = 0.0) -> dict[str, int]:
        """Change the masks during training: pruned entries become 0, grown ones ``grow_value``, and
        the attached optimizers' per-parameter state is zeroed at every changed entry.

        Returns the number of entries pruned and grown."""
        new = self._checked(masks)
        params = self.params
        pruned = grown = 0
        for n in self.names:
            old, mask, param = self.masks[n], new[n], params[n]
            gone, born = old & ~mask, mask & ~old
            pruned, grown = pruned + int(gone.sum()), grown + int(born.sum())
            param.masked_fill_(gone, 0.0)
            param.masked_fill_(born, grow_value)
            for optimizer in self._optimizers:
                mask_optimizer_state(optimizer, [param], [~(gone | born)])
        self.masks = new
        self._factors = None
        self.version += 1
        return {"pruned": pruned, "grown": grown}

    @torch.no_grad()
    def assign(self, weights: Mapping[str, Tensor]) -> None:
        """Copy ``weights`` (by name, every masked parameter) into the parameters, masks not applied."""
        for name, param in self.params.items():
            param.copy_(weights[name])

    @torch.no_grad()
    def apply(self) -> None:
        """Zero every masked weight in place."""
        params = self.params
        torch._foreach_mul_([params[n] for n in self.names], self._mask_factors(params))

    def _mask_factors(self, params: Mapping[str, Tensor]) -> list[Tensor]:
        masks = self.masks  # on the parameters' device; a move drops the factors
        if self._factors is None:
            self._factors = [masks[n].to(params[n].dtype) for n in self.names]
        return self._factors

    # ---- enforcement around an optimizer ----
    def attach(self, optimizers: Iterable[torch.optim.Optimizer]) -> None:
        """Enforce the masks around every step of ``optimizers`` (torch step hooks) until :meth:`detach`.

        Masked optimizer state is zeroed now (a restored or reused optimizer may hold some). The
        weights are masked again after each step of an optimizer not in :data:`KEEP_ZEROS`; those
        leave a zero weight with a zero gradient and zero state exactly zero by their arithmetic.
        """
        self.detach()
        self.refresh()
        params = self.params
        ids = {id(p) for p in params.values()}
        for optimizer in optimizers:
            if not any(id(p) in ids for group in optimizer.param_groups for p in group["params"]):
                continue
            self._optimizers.append(optimizer)
            self._handles.append(optimizer.register_step_pre_hook(self._before_step))
            if type(optimizer) not in KEEP_ZEROS:
                self._handles.append(optimizer.register_step_post_hook(self._after_step))
            mask_optimizer_state(optimizer, list(params.values()), [self.masks[n] for n in self.names])

    def detach(self) -> None:
        """Stop enforcing the masks (the hooks are removed)."""
        for handle in self._handles:
            handle.remove()
        self._handles, self._optimizers = [], []

    @torch.no_grad()
    def mask_gradients_early(self) -> None:
        """Mask the gradients now, before the step (keeping the dense gradient first when
        ``keep_dense_grads`` is set): for work between backward and the step that must see only the
        kept entries, such as gradient-norm clipping, and for Lightning's automatic optimization, whose
        step runs its pre-hooks before the closure's backward. The next pre-hook then keeps no dense
        gradient (it would be this step's, already masked) and only masks again."""
        self._before_step(None, (), {})
        self._masked_before_step = True

    def gradients_arrive_masked(self, names: Iterable[str]) -> None:
        """Declare that the backward of the parameters ``names`` leaves their gradients zero outside
        the current masks (the sparse kernels' layers compute them only there), so that the masking
        before each step skips them, until the masks next change; while ``keep_dense_grads`` is set
        every gradient is masked. Only for parameters whose layer is their only use in the loss."""
        self._arrive_masked = (frozenset(names), self.version)

    @torch.no_grad()
    def _before_step(self, optimizer: torch.optim.Optimizer | None, args: Any, kwargs: Any) -> None:
        early, self._masked_before_step = self._masked_before_step, False
        masked, version = self._arrive_masked
        if version != self.version or self.keep_dense_grads:
            masked = frozenset()
        if masked.issuperset(self.names):
            return  # every gradient arrived masked
        params = self.params
        grads = [params[n].grad for n in self.names]
        if any(g is None for g in grads):
            return  # a parameter this step does not train
        factors = self._mask_factors(params)
        if self.keep_dense_grads and not early:
            self.dense_grads = {n: g.clone() for n, g in zip(self.names, grads)}
        if masked:
            todo = [i for i, n in enumerate(self.names) if n not in masked]
            grads, factors = [grads[i] for i in todo], [factors[i] for i in todo]
        torch._foreach_mul_(grads, factors)

    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.apply()

    # ---- persistence ----
    def state_dict(self) -> dict[str, Tensor]:
        """The masks by parameter name, on the CPU."""
        return {n: m.detach().cpu().clone() for n, m in self.masks.items()}

    def load_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """Install masks saved by :meth:`state_dict` (the weights are expected to match already)."""
        self.set(state_dict)
