"""A deep ensemble (Lakshminarayanan et al. 2017): nets trained apart, predictions averaged."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dwp.errors import DWPError

__all__ = ["DeepEnsemble"]


class DeepEnsemble(nn.Module):
    """Classifiers that take the same inputs, as one model: ``forward`` returns the log of
    their mean softmax (so a softmax of it is the ensemble's predictive distribution).
    :func:`dwp.eval.predict` draws one "sample" per member, which makes the members'
    disagreement the mutual-information score."""

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if len(members) == 0:
            raise DWPError("DeepEnsemble: needs at least one member")
        self.members = nn.ModuleList(members)

    def member_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's softmax, (members, N, classes)."""
        return torch.stack([torch.softmax(m(x), dim=1) for m in self.members])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.member_probs(x).mean(0).clamp_min(1e-300).log()
