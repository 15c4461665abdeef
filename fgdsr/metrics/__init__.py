"""The literature's evaluation protocol on uint8 images: PSNR, SSIM, entropy, SR-vs-HR the MATLAB way."""

from fgdsr.metrics.entropy import entropy
from fgdsr.metrics.protocol import bicubic_row, evaluate_pair, make_lr, y_channel
from fgdsr.metrics.psnr import psnr, shave_border
from fgdsr.metrics.ssim import ssim

__all__ = ["bicubic_row", "entropy", "evaluate_pair", "make_lr", "psnr", "shave_border", "ssim", "y_channel"]
