"""Data: image I/O, MATLAB colour conversion and bicubic, data sets, training patches.

Everything hands out (H, W, 3) uint8 images or (N, C, H, W) float tensors in [0, 1] (see each docstring).
"""

from fgdsr.data.color import rgb2y, rgb2y_uint8, rgb2ycbcr, ycbcr2rgb
from fgdsr.data.datasets import Dataset, default_data_root, resolve_dataset
from fgdsr.data.imresize import imresize, imresize_uint8, modcrop
from fgdsr.data.io import read_image, write_image

__all__ = [
    "Dataset",
    "default_data_root",
    "imresize",
    "imresize_uint8",
    "modcrop",
    "read_image",
    "resolve_dataset",
    "rgb2y",
    "rgb2y_uint8",
    "rgb2ycbcr",
    "write_image",
    "ycbcr2rgb",
]
