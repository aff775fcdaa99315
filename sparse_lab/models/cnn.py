"""A small convolutional classifier."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from sparse_lab.checks import is_int, is_int_list, require


def conv_pool_relu(c_in: int, c_out: int, padding: int = 1) -> list[nn.Module]:
    """Conv3x3, max-pool 2, ReLU: the usual conv-ReLU-pool, with the pool first.

    Max and ReLU are both monotone and exact, so outputs and gradients are bit for bit those of
    ReLU-then-pool, but the ReLU and its backward see a quarter of the elements, which makes a
    conv stack's forward+backward markedly faster (docs/speed.md).
    """
    return [nn.Conv2d(c_in, c_out, 3, padding=padding), nn.MaxPool2d(2), nn.ReLU()]


def conv_pool_out(size: int, padding: int = 1) -> int:
    """Side length of a feature map after :func:`conv_pool_relu` with this ``padding``."""
    return (size + 2 * padding - 2) // 2


class SmallCNN(nn.Module):
    """``[Conv3x3 -> ReLU -> MaxPool2] * len(channels) -> Flatten -> Linear(hidden) -> ReLU -> Linear``.

    Each pool runs before its ReLU (:func:`conv_pool_relu`).
    """

    def __init__(
        self, input_shape: Sequence[int], num_classes: int, channels: Sequence[int] = (32, 64), hidden: int = 128
    ) -> None:
        super().__init__()
        require(is_int_list(channels, empty=True), "model.channels", channels,
                "a list of positive integers (one conv layer each), e.g. model.channels=[32,64]")
        require(is_int(hidden, 1), "model.hidden", hidden, "a positive integer (the CNN's hidden width), e.g. model.hidden=128")
        c, h, w = input_shape
        layers: list[nn.Module] = []
        for out in channels:
            layers += conv_pool_relu(c, out)
            c, h, w = out, conv_pool_out(h), conv_pool_out(w)
        require(min(h, w) >= 1, "model.channels", channels,
                f"at most as many conv+pool stages as the {input_shape[1]}x{input_shape[2]} images allow (each halves the side)")
        layers += [nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
