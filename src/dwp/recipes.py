"""Named settings for training kernel priors (the CLI's ``--recipe``). Torch-free, so the CLI
can offer the choices without importing the training code."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Recipe"]


class Recipe(StrEnum):
    """Named prior-training settings (`--recipe`)."""

    dwp = "dwp"
    """This library's default: kernels standardised (VAEConfig.scale = their RMS), at least
    20000 steps, best epoch chosen on 10% held-out kernels."""
    paper = "paper"
    """The paper's: raw kernels, exactly ``epochs`` epochs, the last epoch's weights."""

    def settings(self) -> dict:
        """``standardize``, ``min_steps`` and ``val_fraction`` of this recipe."""
        if self is Recipe.dwp:
            return {"standardize": True, "min_steps": 20000, "val_fraction": 0.1}
        return {"standardize": False, "min_steps": 0, "val_fraction": 0.0}
