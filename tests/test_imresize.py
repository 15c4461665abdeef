"""MATLAB bicubic: properties, a hand-computed example, and agreement with a loop-per-pixel reference."""

import math

import numpy as np
import pytest
import torch

from fgdsr.data.imresize import imresize, imresize_uint8, modcrop, output_size


def _cubic(x: float) -> float:
    a = abs(x)
    if a <= 1:
        return 1.5 * a**3 - 2.5 * a**2 + 1
    if a <= 2:
        return -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2
    return 0.0


def _ref_axis(v: np.ndarray, out_len: int, scale: float) -> np.ndarray:
    """Resize rows of v (..., n) along the last axis: MATLAB's contributions written as a plain loop."""
    n = v.shape[-1]
    width = 4.0 / scale if scale < 1 else 4.0
    out = np.zeros(v.shape[:-1] + (out_len,))
    for x in range(1, out_len + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        taps = [left + k for k in range(int(math.ceil(width)) + 2)]
        ws = [(scale * _cubic(scale * (u - j)) if scale < 1 else _cubic(u - j)) for j in taps]
        total = sum(ws)
        for j, w in zip(taps, ws, strict=True):
            k = j - 1  # 0-based, then mirror: ..., 1, 0 | 0, 1, ..., n-1 | n-1, n-2, ...
            k = k % (2 * n)
            k = k if k < n else 2 * n - 1 - k
            out[..., x - 1] += (w / total) * v[..., k]
    return out


def _ref_imresize(img: np.ndarray, out_hw, scales, round_passes=False) -> np.ndarray:
    """(H, W) float64 reference; rows first unless the width scale is smaller (MATLAB's order)."""
    x = img.astype(np.float64)
    order = (0, 1) if scales[0] <= scales[1] else (1, 0)
    for axis in order:
        x = np.moveaxis(_ref_axis(np.moveaxis(x, axis, -1), out_hw[axis], scales[axis]), -1, axis)
        if round_passes:
            x = np.clip(np.floor(x + 0.5), 0, 255)
    return x


def test_hand_computed_upscale_by_2():
    # [0, 1] -> u = 0.75, 1.25, 1.75, 2.25; weights (cubic) -0.0234375, 0.2265625, 0.8671875, -0.0703125
    # with mirrored taps: out[0] = -0.0234375 - 0.0703125, out[1] = 0.2265625 - 0.0234375, symmetric after.
    x = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    y = imresize(x, scale=2)
    assert y.shape == (2, 4)
    expect = torch.tensor([-0.09375, 0.203125, 0.796875, 1.09375], dtype=torch.float64)
    torch.testing.assert_close(y[0], expect, rtol=0, atol=1e-15)
    torch.testing.assert_close(y[1], expect, rtol=0, atol=1e-15)


@pytest.mark.parametrize("scale", [1 / 4, 1 / 3, 0.5, 0.7, 1.6, 2, 3, 4])
def test_constant_image_stays_constant(scale):
    x = torch.full((2, 3, 24, 18), 0.37, dtype=torch.float64)
    y = imresize(x, scale=scale)
    assert y.shape[2:] == output_size((24, 18), scale)
    torch.testing.assert_close(y, torch.full_like(y, 0.37), rtol=0, atol=1e-12)


def test_scale_one_and_same_size_are_identity():
    x = torch.rand(1, 3, 13, 9, dtype=torch.float64)
    assert torch.equal(imresize(x, scale=1), x)
    assert torch.equal(imresize(x, size=(13, 9)), x)


def test_shapes():
    x = torch.rand(2, 1, 99, 51)
    assert imresize(x, scale=1 / 3).shape == (2, 1, 33, 17)
    assert imresize(x, size=(37, 23)).shape == (2, 1, 37, 23)
    assert imresize(x, scale=(0.5, 2)).shape == (2, 1, 50, 102)
    assert imresize(torch.rand(10, 10), scale=0.7).shape == (7, 7)  # ceil(7.000...) = 7, 2-D in, 2-D out
    assert imresize(torch.rand(3, 255, 30), scale=1 / 3).shape == (3, 85, 10)  # 255 * (1/3) is 85, not 86
    with pytest.raises(ValueError):
        imresize(x)
    with pytest.raises(TypeError):
        imresize(x.to(torch.uint8), scale=2)


@pytest.mark.parametrize(
    "hw,kw",
    [
        ((20, 17), {"scale": 1 / 3}),
        ((16, 16), {"scale": 0.5}),
        ((11, 14), {"scale": 0.7}),
        ((7, 9), {"scale": 3}),
        ((6, 5), {"scale": 4}),
        ((12, 10), {"size": (5, 23)}),  # downscale rows, upscale columns: order matters
        ((9, 13), {"size": (20, 4)}),
    ],
)
def test_matches_loop_reference_on_random_data(hw, kw):
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, size=hw)
    y = imresize(torch.from_numpy(img), **kw).numpy()
    if "scale" in kw:
        scales = (kw["scale"], kw["scale"])
        out_hw = output_size(hw, kw["scale"])
    else:
        out_hw = kw["size"]
        scales = (out_hw[0] / hw[0], out_hw[1] / hw[1])
    ref = _ref_imresize(img, out_hw, scales)
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-10)
    # the uint8 path rounds after each pass, exactly like MATLAB on uint8 images
    u8 = np.floor(img).astype(np.uint8)
    got = imresize_uint8(u8, **kw)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, _ref_imresize(u8, out_hw, scales, round_passes=True).astype(np.uint8))


@pytest.mark.parametrize("scale", [0.25, 0.5, 2, 3])
def test_dense_band_and_gather_agree(scale):
    from fgdsr.data.imresize import resize_axis

    x = torch.rand(2, 3, 130, 150, dtype=torch.float64)  # > 96 outputs: several band blocks
    for dim in (2, 3):
        n = output_size((x.shape[dim], x.shape[dim]), scale)[0]
        a = resize_axis(x, dim, n, scale, method="dense")
        for method in ("band", "gather"):
            torch.testing.assert_close(resize_axis(x, dim, n, scale, method=method), a, rtol=0, atol=1e-12)


def test_batched_equals_per_image_and_float32_close():
    x = torch.rand(4, 3, 30, 22, dtype=torch.float64)
    y = imresize(x, scale=0.5)
    for i in range(4):
        torch.testing.assert_close(imresize(x[i], scale=0.5), y[i], rtol=0, atol=1e-12)
    torch.testing.assert_close(imresize(x.float(), scale=0.5), y.float(), rtol=0, atol=1e-5)


def test_uint8_numpy_and_torch_agree():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, size=(24, 20, 3), dtype=np.uint8)
    a = imresize_uint8(img, scale=0.5)
    b = imresize_uint8(torch.from_numpy(img).permute(2, 0, 1)[None], scale=0.5)
    assert a.shape == (12, 10, 3) and b.dtype == torch.uint8
    np.testing.assert_array_equal(a, b[0].permute(1, 2, 0).numpy())


def test_differs_from_torch_antialias_at_borders_only():
    """torch's antialiased bicubic renormalises truncated taps; MATLAB mirrors. Interior agrees closely."""
    import torch.nn.functional as F

    x = torch.rand(1, 1, 64, 64, dtype=torch.float64)
    a = imresize(x, scale=0.5)
    b = F.interpolate(x, scale_factor=0.5, mode="bicubic", antialias=True, align_corners=False)
    assert (a - b)[..., 4:-4, 4:-4].abs().max() < 1e-6
    assert (a - b).abs().max() > 1e-3


def test_modcrop():
    a = np.zeros((13, 10, 3), np.uint8)
    assert modcrop(a, 4).shape == (12, 8, 3)
    assert modcrop(torch.zeros(1, 3, 13, 10), 3).shape == (1, 3, 12, 9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu():
    x = torch.rand(2, 3, 40, 30, dtype=torch.float64)
    torch.testing.assert_close(imresize(x.cuda(), scale=0.25).cpu(), imresize(x, scale=0.25))
