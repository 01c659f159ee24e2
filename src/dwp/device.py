"""Device selection from a user option: ``auto``, ``cpu`` or ``cuda`` (``cuda:N``)."""

from __future__ import annotations

import torch

from dwp.errors import DWPError

__all__ = ["resolve_device"]


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` is CUDA when available, else CPU; asking for CUDA without it is an error."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DWPError(f"unknown device {name!r}; expected auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DWPError("device 'cuda' requested but CUDA is not available; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise DWPError(f"unsupported device {name!r}; expected auto, cpu or cuda")
    return device
