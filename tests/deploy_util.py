"""Tiny models with random, non-trivial weights for the deployment tests (export, upscale, evaluate)."""

from __future__ import annotations

import torch

from fgdsr import checkpoint as ck
from fgdsr.config import TrainConfig
from fgdsr.models import build_model


def tiny_model(loss: str = "l1", scale: int = 4, depth: int = 2, seed: int = 0, **fields):
    """(model in eval mode, cfg): LapSRN with 8 channels, weights perturbed so that tiling or backend errors
    show (a zero-initialised FD head would hide the K-bin classifier)."""
    cfg = TrainConfig().replace(depth=depth, channels=8, scale=scale, loss=loss, **fields)
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for p in model.trunk.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        if loss in ("cs", "fd"):
            for p in model.heads.parameters():
                torch.nn.init.normal_(p, std=0.05)
    return model, cfg


def tiny_checkpoint(folder, loss: str = "l1", **kwargs):
    """A checkpoint folder of `tiny_model(loss, **kwargs)`."""
    model, cfg = tiny_model(loss, **kwargs)
    return ck.save_model_checkpoint(folder, model, cfg, {"step": 0})
