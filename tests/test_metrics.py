"""PSNR / SSIM / entropy: hand-computed values, an independent SSIM, and the paper's Bicubic rows."""

import math

import numpy as np
import pytest

from fgdsr.metrics import entropy, evaluate_pair, psnr, ssim
from fgdsr.metrics.protocol import bicubic_row, make_lr, y_channel
from fgdsr.metrics.ssim import gaussian_1d


def test_psnr_hand_computed():
    a = np.zeros((4, 4))
    b = a.copy()
    b[1, 2] = 16  # MSE = 256 / 16 = 16 -> 10 log10(255^2 / 16)
    assert psnr(a, b) == pytest.approx(10 * math.log10(65025 / 16), abs=1e-12)
    assert psnr(a, b) == pytest.approx(36.0896, abs=1e-4)
    assert psnr(a, a) == math.inf


def test_psnr_shave_ignores_the_border():
    a = np.full((6, 6), 100.0)
    b = a.copy()
    b[0, :] = 0  # only in the shaved border
    b[2, 3] = 110  # MSE over the inner 4x4 = 100 / 16
    assert psnr(a, b, shave=1) == pytest.approx(10 * math.log10(65025 * 16 / 100), abs=1e-12)
    with pytest.raises(ValueError):
        psnr(a, b, shave=3)
    with pytest.raises(ValueError):
        psnr(a, b[:5])


def test_ssim_constant_images_closed_form():
    # one 11x11 window, no variance: SSIM = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1) * C2 / C2
    c1 = (0.01 * 255) ** 2
    a, b = np.full((11, 11), 100.0), np.full((11, 11), 110.0)
    assert ssim(a, b) == pytest.approx((2 * 100 * 110 + c1) / (100**2 + 110**2 + c1), abs=1e-12)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)


def test_ssim_single_window_by_explicit_sums():
    """11x11 images = one window; weighted moments written out with fspecial's 2-D Gaussian."""
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 255, (11, 11)), rng.uniform(0, 255, (11, 11))
    r = np.arange(11) - 5
    w = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5**2))
    w /= w.sum()
    mx, my = (w * x).sum(), (w * y).sum()
    sx, sy, sxy = (w * x * x).sum() - mx**2, (w * y * y).sum() - my**2, (w * x * y).sum() - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    expect = (2 * mx * my + c1) * (2 * sxy + c2) / ((mx**2 + my**2 + c1) * (sx + sy + c2))
    assert ssim(x, y) == pytest.approx(expect, abs=1e-12)
    np.testing.assert_allclose(np.outer(gaussian_1d(), gaussian_1d()), w, atol=1e-15)


def test_ssim_matches_scikit_image_gaussian_variant():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (40, 33))
    y = np.clip(x + rng.normal(0, 20, x.shape), 0, 255)
    ref = structural_similarity(
        x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert ssim(x, y) == pytest.approx(ref, abs=1e-9)
    assert ssim(x, y, shave=4) != pytest.approx(ref, abs=1e-6)  # shave does change the region


def test_entropy_hand_computed():
    assert entropy(np.zeros((8, 8), np.uint8)) == 0.0
    assert entropy(np.array([[0, 255], [0, 255]], np.uint8)) == pytest.approx(1.0)
    assert entropy(np.arange(256, dtype=np.uint8).reshape(16, 16)) == pytest.approx(8.0)
    assert entropy(np.array([0, 0, 1, 2], np.uint8)) == pytest.approx(1.5)  # -(.5 log .5 + 2 * .25 log .25)
    with pytest.raises(ValueError):
        entropy(np.zeros((2, 2)))


def test_protocol_y_and_gray_sources():
    rgb = np.array([[[255, 0, 0], [0, 0, 0]]], np.uint8)
    assert y_channel(rgb).tolist() == [[81.0, 16.0]]
    gray = np.repeat(np.array([[200, 10]], np.uint8)[..., None], 3, axis=2)
    assert y_channel(gray, gray=True).tolist() == [[200.0, 10.0]]  # single-channel files: gray value = Y
    assert y_channel(rgb, rounded=False)[0, 0] == pytest.approx(16 + 65.481)


def test_evaluate_pair_known_error():
    hr = np.full((20, 20, 3), 128, np.uint8)
    sr = hr.copy()
    sr[10, 10] = 138  # Y: round(16 + 219 * 128 / 255) = 126 -> round(134.52) = 135, a step of 9
    p, s = evaluate_pair(sr, hr, scale=2)
    dy = float(y_channel(sr)[10, 10] - y_channel(hr)[10, 10])
    assert dy == 9
    assert p == pytest.approx(10 * math.log10(65025 * 256 / dy**2), abs=1e-9)
    assert 0 < s < 1
    with pytest.raises(ValueError):
        evaluate_pair(sr[:10], hr, 2)


def test_make_lr_variants():
    rng = np.random.default_rng(2)
    hr = rng.integers(0, 256, size=(12, 8, 3), dtype=np.uint8)
    lr = make_lr(hr, 4)
    assert lr.shape == (3, 2, 3) and lr.dtype == np.float64
    lr8 = make_lr(hr, 4, lr_uint8=True)
    assert lr8.dtype == np.uint8 and np.abs(lr8 / 255.0 - lr).max() <= 0.5 / 255 + 1e-12
    with pytest.raises(ValueError):
        make_lr(hr, 5)


# The paper's Table 2 Bicubic rows (Set5 must match within 0.02 dB / 0.001 SSIM).
SET5 = {2: (33.66, 0.9299), 3: (30.39, 0.8682), 4: (28.42, 0.8104)}
SET14 = {2: (30.24, 0.8688), 3: (27.55, 0.7742), 4: (26.00, 0.7027)}


def _row(data_root, name, scale):
    from fgdsr.data.datasets import resolve_dataset

    ds = resolve_dataset(name, data_root)
    rows = [bicubic_row(ds.image(i), scale, gray=ds.is_gray(i)) for i in range(len(ds))]
    return np.mean(rows, axis=0)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_set5_bicubic_row(data_root, scale):
    p, s = _row(data_root, "Set5", scale)
    assert abs(p - SET5[scale][0]) <= 0.02, p
    assert abs(s - SET5[scale][1]) <= 0.001, s


@pytest.mark.slow
def test_set14_bicubic_row(data_root):
    """Our Set14 copy (bridge single-channel, Y = gray) reproduces the published row within 0.01 dB."""
    for scale in (2, 4):
        p, s = _row(data_root, "Set14", scale)
        assert abs(p - SET14[scale][0]) <= 0.01, (scale, p)
        assert abs(s - SET14[scale][1]) <= 0.001, (scale, s)
