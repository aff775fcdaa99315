"""LeNet-5-Caffe, the convolutional net of SNIP's MNIST experiments."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from sparse_lab.errors import ConfigError


class LeNet5(nn.Module):
    """``conv 20 5x5 -> max-pool 2 -> conv 50 5x5 -> max-pool 2 -> fc 500 -> ReLU -> fc classes``.

    As Caffe's LeNet and SNIP's ``lenet5``: valid convolutions with no activation after them (the
    max-pools follow directly), ReLU after the first fully connected layer only; on MNIST 430,500
    weights (431,080 parameters with the biases). PyTorch's default init.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        channels, height, width = input_shape
        if height < 12 or width < 12:
            raise ConfigError(f"model=lenet5 needs images of at least 12x12 pixels, the data has {height}x{width}")
        side = lambda n: ((n - 4) // 2 - 4) // 2  # noqa: E731  (conv 5, pool 2, conv 5, pool 2)
        flat = 50 * side(height) * side(width)
        self.net = nn.Sequential(
            nn.Conv2d(channels, 20, 5), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(flat, 500), nn.ReLU(), nn.Linear(500, num_classes),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
