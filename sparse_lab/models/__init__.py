"""Plain nn.Modules; each takes ``input_shape`` and ``num_classes`` from the data."""

from sparse_lab.models.cnn import SmallCNN
from sparse_lab.models.lenet import LeNet5
from sparse_lab.models.mlp import MLP
from sparse_lab.models.noise_schedule import CosineNoiseSchedule, LinearAlphaSchedule
from sparse_lab.models.noprop import NoPropBlock, NoPropDTModel, NoPropSharedModel
from sparse_lab.models.resnet import ResNet18

__all__ = [
    "MLP",
    "CosineNoiseSchedule",
    "LeNet5",
    "LinearAlphaSchedule",
    "NoPropBlock",
    "NoPropDTModel",
    "NoPropSharedModel",
    "ResNet18",
    "SmallCNN",
]
