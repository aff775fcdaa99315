"""LightningModules, one per kind of training."""

from sparse_lab.methods.classifier import Classifier, NonFiniteLossError

__all__ = ["Classifier", "NonFiniteLossError"]
