"""Fully connected ReLU network."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from sparse_lab.checks import INITS, is_int_list, is_number, one_of, require

# TensorFlow 1's variance_scaling_initializer (scale 1, fan_in, truncated normal): the standard deviation
# of a normal cut at two standard deviations, divided by this, is sqrt(1 / fan_in).
TRUNCATED_NORMAL_STD = 0.87962566103423978


def weight_count(inputs: int, hidden: Sequence[int], outputs: int) -> int:
    """Weights (not biases) of the MLP ``inputs -> hidden -> outputs``."""
    widths = [inputs, *hidden, outputs]
    return sum(a * b for a, b in zip(widths[:-1], widths[1:]))


def dense_widths(inputs: int, hidden: Sequence[int], outputs: int, density: float) -> list[int]:
    """``hidden`` scaled by one factor f so that the dense MLP has ``density`` times the weights of
    ``inputs -> hidden -> outputs`` (the count is quadratic in f: the root, each width rounded, at least 1)."""
    if not hidden:
        return []
    quadratic = sum(a * b for a, b in zip(hidden[:-1], hidden[1:]))
    linear = inputs * hidden[0] + hidden[-1] * outputs
    target = density * weight_count(inputs, hidden, outputs)
    f = target / linear if quadratic == 0 else (-linear + math.sqrt(linear**2 + 4 * quadratic * target)) / (2 * quadratic)
    return [max(1, round(h * f)) for h in hidden]


class MLP(nn.Module):
    """``Flatten -> [Linear -> ReLU] * len(hidden) -> Linear``.

    ``init``: ``torch`` (PyTorch's default for ``nn.Linear``), ``glorot_uniform`` (Keras' default:
    ``xavier_uniform_`` weights, zero biases) or ``glorot_normal`` (Gaussian Glorot, as Frankle &
    Carbin initialise their fully connected nets; zero biases) or ``variance_scaling`` (TensorFlow 1's
    ``variance_scaling_initializer``, which SNIP's reference code uses: a normal of standard deviation
    ``sqrt(1 / fan_in)`` truncated at two standard deviations; zero biases). The Linear layers are exposed in
    order as :attr:`linears` (input to output).

    ``match_sparsity``: every hidden width scaled by one factor so that the net has as many weights
    as ``hidden`` pruned to that sparsity (see :func:`dense_widths`): the small-dense control.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        hidden: Sequence[int] = (256, 128),
        init: str = "torch",
        match_sparsity: float = 0.0,
    ) -> None:
        super().__init__()
        require(is_int_list(hidden, empty=True), "model.hidden", hidden,
                "a list of positive integers (the hidden widths), e.g. model.hidden=[256,128]")
        one_of("model.init", init, INITS)
        require(is_number(match_sparsity, 0) and match_sparsity < 1, "method.model_args.match_sparsity", match_sparsity,
                "a number in [0, 1) (small_dense: the sparsity whose weight count to match)")
        self.init = init
        if match_sparsity > 0:
            hidden = dense_widths(math.prod(input_shape), hidden, num_classes, 1 - match_sparsity)
        widths = [math.prod(input_shape), *hidden, num_classes]
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(fan_in, fan_out))
            if i < len(widths) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)
        if init != "torch":
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw every weight and bias afresh with this net's ``init``."""
        for linear in self.linears:
            if self.init == "torch":
                linear.reset_parameters()
                continue
            if self.init == "variance_scaling":
                std = math.sqrt(1.0 / linear.in_features) / TRUNCATED_NORMAL_STD
                nn.init.trunc_normal_(linear.weight, std=std, a=-2 * std, b=2 * std)
            else:
                (nn.init.xavier_uniform_ if self.init == "glorot_uniform" else nn.init.xavier_normal_)(linear.weight)
            nn.init.zeros_(linear.bias)

    @property
    def linears(self) -> list[nn.Linear]:
        return [m for m in self.net if isinstance(m, nn.Linear)]

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
