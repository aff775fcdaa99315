"""LightningModules, one per kind of training."""

from sparse_lab.methods.classifier import Classifier
from sparse_lab.methods.common import NonFiniteLossError, inner_model
from sparse_lab.methods.noprop import (
    DenoisingClassifier,
    NoPropDT,
    NoPropDTBackprop,
    NoPropShared,
    NoPropSharedBackprop,
)

__all__ = [
    "Classifier",
    "DenoisingClassifier",
    "NonFiniteLossError",
    "NoPropDT",
    "NoPropDTBackprop",
    "NoPropShared",
    "NoPropSharedBackprop",
    "inner_model",
]
