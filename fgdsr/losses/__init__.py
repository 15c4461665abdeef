"""Losses: Charbonnier (LapSRN) and the FGD loss (Eq. 1-6). `build_loss(cfg)` for every `cfg.loss`."""

from __future__ import annotations

from fgdsr.losses.charbonnier import charbonnier
from fgdsr.losses.fgd import FGDLoss, balance_loss, class_distance_loss


def build_loss(cfg) -> FGDLoss:
    """The loss module for `cfg.loss` (l1, cs, fd, aux): `loss(out, targets, step) -> (total, terms)`."""
    return FGDLoss(cfg)


__all__ = ["FGDLoss", "balance_loss", "build_loss", "charbonnier", "class_distance_loss"]
