"""CIFAR-style ResNet-18: 3x3 stem, no max-pool, BasicBlocks [2, 2, 2, 2], average pool, Linear."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from sparse_lab.checks import is_int, require


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a identity (or 1x1 conv-BN) shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs; ``width`` is the first stage's channels (64 in the reference;
    stages are width, 2w, 4w, 8w). Kaiming-normal (fan_out) init for convolutions, as the reference."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, width: int = 64) -> None:
        super().__init__()
        require(is_int(width, 1), "model.width", width, "a positive integer (the first stage's channels; 64 = the reference)")
        channels = input_shape[0]
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        in_channels = width
        for stage, stride in enumerate((1, 2, 2, 2)):
            out = width * 2**stage
            layers += [BasicBlock(in_channels, out, stride), BasicBlock(out, out, 1)]
            in_channels = out
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))
