"""MATLAB BT.601 colour conversion: known values, rounding, round trips."""

import numpy as np
import torch

from fgdsr.data.color import (
    rgb2y,
    rgb2y_uint8,
    rgb2ycbcr,
    rgb2ycbcr_uint8,
    round_half_up,
    to_uint8,
    ycbcr2rgb,
    ycbcr2rgb_uint8,
)


def test_known_uint8_values():
    # Y = round(16 + (65.481 R + 128.553 G + 24.966 B) / 255), computed by hand:
    rgb = np.array(
        [[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 128, 128]]], np.uint8
    )
    y = rgb2y_uint8(rgb)
    assert y.tolist() == [
        [16, 235, 81, 145, 41, 126]
    ]  # 81.481, 144.553, 40.966, 16 + 219 * 128 / 255 = 125.93
    ycc = rgb2ycbcr_uint8(rgb)
    assert ycc[0, 1].tolist() == [235, 128, 128]  # white: neutral chroma
    assert ycc[0, 2].tolist() == [81, 90, 240]  # red: Cb = 128 - 37.797, Cr = 128 + 112


def test_gray_2d_input_equals_3_equal_channels():
    g = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert np.array_equal(rgb2y_uint8(g), rgb2y_uint8(np.repeat(g[..., None], 3, axis=2)))


def test_rounding_is_half_up_like_matlab():
    assert to_uint8(np.array([0.5, 1.5, 2.5, -3.0, 300.0])).tolist() == [1, 2, 3, 0, 255]
    assert round_half_up(torch.tensor([0.5, 2.5])).tolist() == [1.0, 3.0]


def test_float_round_trip_and_range():
    x = torch.rand(2, 3, 7, 5, dtype=torch.float64)
    ycc = rgb2ycbcr(x)
    assert torch.allclose(ycbcr2rgb(ycc), x, atol=1e-12)
    assert ycc[:, 0].min() >= 16 / 255 - 1e-12 and ycc[:, 0].max() <= 235 / 255 + 1e-12
    assert torch.allclose(rgb2y(x), ycc[:, :1], atol=1e-12)


def test_torch_y_rounded_equals_uint8_y():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(9, 11, 3), dtype=np.uint8)
    t = torch.from_numpy(rgb.astype(np.float64) / 255).permute(2, 0, 1)[None]
    y = torch.floor(rgb2y(t)[0, 0] * 255 + 0.5).numpy().astype(np.uint8)
    assert np.array_equal(y, rgb2y_uint8(rgb))


def test_uint8_round_trip_within_quantisation():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    back = ycbcr2rgb_uint8(rgb2ycbcr_uint8(rgb))
    assert np.abs(back.astype(int) - rgb.astype(int)).max() <= 3  # YCbCr has fewer levels than RGB
