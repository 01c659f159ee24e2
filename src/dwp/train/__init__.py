"""Training loops. Each takes a config dataclass and returns metrics; progress goes to callbacks."""

from dwp.train.loop import adam_linear_decay, shuffled_batches
from dwp.train.prior import PriorTrainConfig, evaluate_prior, fit_prior, train_prior
from dwp.train.source import SourceConfig, train_source_net, train_source_nets

__all__ = [
    "PriorTrainConfig",
    "SourceConfig",
    "adam_linear_decay",
    "evaluate_prior",
    "fit_prior",
    "shuffled_batches",
    "train_prior",
    "train_source_net",
    "train_source_nets",
]
