"""Plain nn.Modules; each takes ``input_shape`` and ``num_classes`` from the data."""

from sparse_lab.models.cnn import SmallCNN
from sparse_lab.models.mlp import MLP
from sparse_lab.models.resnet import ResNet18

__all__ = ["MLP", "ResNet18", "SmallCNN"]
