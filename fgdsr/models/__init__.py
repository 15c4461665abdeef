"""SR networks (a plain dict name -> class, no registry) and `build_model(cfg) -> SRModel`."""

from __future__ import annotations

from torch import nn

from fgdsr.errors import UserError
from fgdsr.models.fgd import ModelOutput, SRModel
from fgdsr.models.lapsrn import LapSRN
from fgdsr.models.srcnn import SRCNN
from fgdsr.models.vdsr import VDSR

MODELS: dict[str, type[nn.Module]] = {"lapsrn": LapSRN, "srcnn": SRCNN, "vdsr": VDSR}


def build_trunk(cfg) -> nn.Module:
    """The bare network of `cfg.model` (what a baseline checkpoint's `trunk.` weights load into)."""
    if cfg.model not in MODELS:
        raise UserError(f"config field 'model': unknown '{cfg.model}' ({', '.join(MODELS)})")
    if cfg.model == "lapsrn":
        return LapSRN(cfg.scale, cfg.depth, cfg.channels, cfg.layout, cfg.weight_norm)
    return MODELS[cfg.model](scale=cfg.scale, channels=cfg.channels, weight_norm=cfg.weight_norm)


def build_model(cfg) -> SRModel:
    """`SRModel(trunk, cfg)` with the heads `cfg.loss` needs (l1: none; aux: a training-only head)."""
    return SRModel(build_trunk(cfg), cfg)


__all__ = ["MODELS", "ModelOutput", "SRModel", "build_model", "build_trunk"]
