"""LapSRN / SRCNN / VDSR: parameter counts, pyramid shapes, crop alignment, init, weight norm, export."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fgdsr.models.init import bilinear_kernel, remove_weight_norm_
from fgdsr.models.lapsrn import CroppedConvTranspose2d, LapSRN
from fgdsr.models.srcnn import SRCNN
from fgdsr.models.vdsr import VDSR


def counts(model: torch.nn.Module) -> tuple[int, int]:
    """(params, kernel weights): every trainable value, and conv kernels only."""
    params = sum(p.numel() for p in model.parameters())
    weights = sum(
        m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)
    )
    return params, weights


# Hand count, x4 official: input 3*3*64 (+64 b); per level 10 convs 36,864 (+64 b), up-conv 3x3 36,864 (+64 b),
# residual 576 (+1 b), image branch 16 -> 406,096 weights, 705 biases per level.
@pytest.mark.parametrize(
    ("scale", "layout", "params", "weights"),
    [
        (2, "official", 407_441, 406_672),
        (4, "official", 814_242, 812_768),
        (3, "official", 814_242, 812_768),
        (8, "official", 667_123, 665_904),
        (2, "port", 435_344, 435_344),
        (4, "port", 870_112, 870_112),
        (8, "port", 751_920, 751_920),
    ],
)
def test_lapsrn_param_counts(scale, layout, params, weights):
    assert counts(LapSRN(scale, layout=layout)) == (params, weights)


def test_lapsrn_depth_default_and_levels():
    assert (LapSRN(2).num_levels, LapSRN(2).depth) == (1, 10)
    assert (LapSRN(4).num_levels, LapSRN(4).depth) == (2, 10)
    assert (LapSRN(8).num_levels, LapSRN(8).depth) == (3, 5)
    assert LapSRN(4, depth=3).depth == 3


@pytest.mark.parametrize("layout", ["official", "port"])
@pytest.mark.parametrize(("h", "w"), [(7, 9), (8, 10), (1, 2), (5, 4)])
def test_lapsrn_pyramid_shapes_odd_and_even(layout, h, w):
    model = LapSRN(8, depth=1, channels=8, layout=layout)
    images, features = model.forward_pyramid(torch.rand(2, 1, h, w))
    assert len(images) == len(features) == 3
    for level, (img, feat) in enumerate(zip(images, features, strict=True)):
        f = 2 ** (level + 1)
        assert img.shape == (2, 1, h * f, w * f)
        assert feat.shape == (2, 8, h * f, w * f)
    assert model(torch.rand(1, 1, h, w)).shape == (1, 1, 8 * h, 8 * w)


def test_lapsrn_x3_is_x4_resized_by_matlab_bicubic():
    from fgdsr.data.imresize import imresize

    torch.manual_seed(0)
    model = LapSRN(3, depth=1, channels=8)
    x = torch.rand(1, 1, 7, 10)
    images, _ = model.forward_pyramid(x)
    assert images[-1].shape == (1, 1, 28, 40)  # the x4 pyramid
    y = model(x)
    assert y.shape == (1, 1, 21, 30)
    torch.testing.assert_close(y, imresize(images[-1], size=(21, 30)))


@pytest.mark.parametrize(("h", "w"), [(5, 6), (6, 5), (4, 4)])
def test_official_upconv_crop_keeps_top_left(h, w):
    """MatConvNet crop [0 1 0 1]: the full (2h+1) output minus its last row and column."""
    torch.manual_seed(1)
    up = CroppedConvTranspose2d(3, 2, 3, 2, crop=(0, 1, 0, 1))
    x = torch.randn(1, 3, h, w)
    full = F.conv_transpose2d(x, up.weight, up.bias, stride=2)
    assert full.shape[-2:] == (2 * h + 1, 2 * w + 1)
    torch.testing.assert_close(up(x), full[..., : 2 * h, : 2 * w])


def test_image_branch_bilinear_doubles_a_ramp_exactly():
    """The bilinear 4x4 stride-2 crop-1 kernel is linear interpolation at ±1/4 pixel: a ramp stays a ramp."""
    k = bilinear_kernel(4)
    torch.testing.assert_close(k[0], torch.tensor([0.0625, 0.1875, 0.1875, 0.0625]))
    model = LapSRN(2, depth=1, channels=4)
    ramp = torch.arange(6, dtype=torch.float32).view(1, 1, 1, 6).expand(1, 1, 6, 6).contiguous()
    y = model.levels[0].img_up(ramp)
    # Interior output column j samples input position (j - 0.5) / 2: values 0.25, 0.75, 1.25, ...
    expected = (torch.arange(12, dtype=torch.float32) - 0.5) / 2
    torch.testing.assert_close(y[0, 0, 3, 1:-1], expected[1:-1])


def test_lapsrn_official_init():
    torch.manual_seed(0)
    model = LapSRN(4)
    assert model.input_conv.weight.std().item() == pytest.approx(1e-3, rel=0.15)
    std = math.sqrt(2 / (9 * 64))
    for level in model.levels:
        assert level.convs[0].weight.std().item() == pytest.approx(std, rel=0.05)
        assert level.upconv.weight.std().item() == pytest.approx(std, rel=0.05)
        assert level.residual.weight.std().item() == pytest.approx(std, rel=0.15)
        torch.testing.assert_close(level.img_up.weight[0, 0], bilinear_kernel(4))
    biases = [m.bias for m in model.modules() if getattr(m, "bias", None) is not None]
    assert biases and all(torch.count_nonzero(b) == 0 for b in biases)


def test_weight_norm_on_every_conv_keeps_init_and_trains():
    from torch.nn.utils import parametrize

    torch.manual_seed(0)
    plain = LapSRN(4, depth=2, channels=8)
    torch.manual_seed(0)
    normed = LapSRN(4, depth=2, channels=8, weight_norm=True)
    convs = [m for m in normed.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
    assert convs and all(parametrize.is_parametrized(m, "weight") for m in convs)
    # g per output channel: ConvTranspose2d keeps out channels in dim 1.
    assert normed.levels[0].upconv.parametrizations.weight.original0.shape == (1, 8, 1, 1)
    x = torch.rand(2, 1, 6, 7)
    torch.testing.assert_close(normed(x), plain(x), atol=1e-6, rtol=1e-5)
    normed(x).mean().backward()
    assert normed.levels[0].convs[0].parametrizations.weight.original0.grad is not None
    remove_weight_norm_(normed)
    assert counts(normed) == counts(plain)
    torch.testing.assert_close(normed(x), plain(x), atol=1e-6, rtol=1e-5)


def test_srcnn_and_vdsr_counts_and_shapes():
    assert counts(SRCNN(4)) == (57_281, 57_184)
    assert counts(VDSR(4)) == (665_921, 664_704)
    x = torch.rand(1, 1, 7, 9)
    assert SRCNN(3)(x).shape == (1, 1, 21, 27)
    images, features = VDSR(2).forward_pyramid(x)
    assert images[0].shape == (1, 1, 14, 18) and features[0].shape == (1, 64, 14, 18)


def test_vdsr_is_residual_over_matlab_bicubic():
    from fgdsr.data.imresize import imresize

    model = VDSR(2, layers=3)
    torch.nn.init.zeros_(model.tail.weight)
    x = torch.rand(1, 1, 6, 5)
    torch.testing.assert_close(model(x), imresize(x, size=(12, 10)))


@pytest.mark.slow
def test_lapsrn_exports_to_onnx_with_dynamic_hw():
    """torch.onnx (dynamo) with symbolic H/W; ONNX Runtime matches torch at two odd/even sizes."""
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = LapSRN(4, depth=1, channels=8).eval()
    h, w = torch.export.Dim("h", min=2, max=256), torch.export.Dim("w", min=2, max=256)
    prog = torch.onnx.export(
        model, (torch.rand(1, 1, 9, 12),), dynamo=True, dynamic_shapes={"x": {2: h, 3: w}}, verbose=False
    )
    dims = prog.model_proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param != "" for d in dims[2:]] == [True, True]  # symbolic, not frozen
    sess = ort.InferenceSession(prog.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for hw in [(9, 12), (16, 7)]:
        x = torch.rand(1, 1, *hw)
        (y,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
        with torch.no_grad():
            ref = model(x).numpy()
        assert y.shape == ref.shape == (1, 1, 4 * hw[0], 4 * hw[1])
        assert abs(y - ref).max() < 1e-5
