"""Training loops. Each takes a config dataclass and returns metrics; progress goes to callbacks."""

from dwp.train.prior import PriorTrainConfig, evaluate_prior, fit_prior, train_prior
from dwp.train.source import SourceConfig, evaluate_accuracy, train_source_net, train_source_nets

__all__ = [
    "PriorTrainConfig",
    "SourceConfig",
    "evaluate_accuracy",
    "evaluate_prior",
    "fit_prior",
    "train_prior",
    "train_source_net",
    "train_source_nets",
]
