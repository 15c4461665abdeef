"""The FGD loss on hand-made tensors: bins (Eq. 1-2), CE (Eq. 3), L_c2 (Eq. 4), offsets (Fig. 3), Eq. 6."""

from __future__ import annotations

import math

import pytest
import torch

from fgdsr.config import TrainConfig
from fgdsr.losses import balance_loss, build_loss, charbonnier, class_distance_loss
from fgdsr.losses.fgd import classification_loss, two_hot
from fgdsr.models.fgd import BinGrid, ModelOutput, area_offset, nearest_up

G32 = BinGrid(32)


def test_bin_edges_and_anchors():
    k = 32
    y = torch.tensor([0.0, 1 / k - 1e-6, 1 / k, 0.5, 1 - 1e-6, 1.0, -0.2, 1.3])
    assert G32.index(y).tolist() == [0, 0, 1, 16, 31, 31, 0, 31]  # 1.0 -> last bin; clamp to [0, 1] first
    assert torch.allclose(G32.anchor(torch.tensor([0, 31])), torch.tensor([1 / 64, 63 / 64]))
    # every value lies in its anchor's bin: |y - A| <= half a bin
    y = torch.linspace(0, 1, 1001)
    assert (y - G32.anchor(G32.index(y))).abs().max() <= 0.5 / k + 1e-7


def test_studio_bins_cover_y_range():
    """bin_range studio: 32 bins over [16, 235]/255, width 219/255/32; Y = 16/255 -> bin 0, 235/255 -> bin 31."""
    g = BinGrid.from_config(TrainConfig(bin_range="studio"))
    w = 219 / 255 / 32
    assert g.width == pytest.approx(w)
    y = torch.tensor([0.0, 16 / 255, 16 / 255 + 1.01 * w, 0.5, 235 / 255, 1.0])
    assert g.index(y).tolist() == [0, 0, 1, int((0.5 - 16 / 255) / w), 31, 31]
    assert g.anchor(torch.tensor([0.0])).item() == pytest.approx(16 / 255 + w / 2)
    assert g.halfwidth(5) == pytest.approx(2.5 * w)


def test_charbonnier_values():
    a = torch.tensor([0.0, 0.5, 1.0])
    b = torch.tensor([0.0, 0.25, 0.0])
    assert charbonnier(a, a, 1e-3).item() == pytest.approx(1e-3)
    assert charbonnier(a, b, 0.0).item() == pytest.approx((0 + 0.25 + 1) / 3)
    want = (1e-3 + math.sqrt(0.25**2 + 1e-6) + math.sqrt(1 + 1e-6)) / 3
    assert charbonnier(a, b, 1e-3).item() == pytest.approx(want, rel=1e-6)


def test_offset_bounds_and_slope():
    anchor = torch.full((1, 1, 1, 5), 0.5)
    h = 2.5 / 32
    y = torch.tensor([-10.0, 0.0, 0.5, 1.0, 10.0]).view(1, 1, 1, 5)
    s = area_offset(y, anchor, h)
    assert ((s >= 0.5 - h) & (s <= 0.5 + h)).all()
    assert s[0, 0, 0, 2].item() == 0.5
    # slope 1 at the anchor: a regression inside its own bin passes almost unchanged
    y = torch.tensor([0.5 + 1e-4], requires_grad=True)
    area_offset(y, torch.tensor([0.5]), h).backward()
    assert y.grad.item() == pytest.approx(1.0, abs=1e-5)


def test_class_distance_loss_by_hand():
    p = torch.tensor([0.5, 0.3, 0.2]).view(1, 3, 1, 1)
    assert class_distance_loss(p).item() == pytest.approx(-(0.2 + 0.3 + 0.1))
    onehot = torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1)
    assert class_distance_loss(onehot).item() == pytest.approx(-2.0)
    assert class_distance_loss(torch.full((2, 3, 2, 2), 1 / 3)).item() == pytest.approx(0.0, abs=1e-7)
    # averaged over sub-images: two sub-images, -0.6 and -2 -> -1.3
    two = torch.tensor([[0.5, 0.3, 0.2], [0.0, 1.0, 0.0]]).T.reshape(1, 3, 1, 2)
    assert class_distance_loss(two).item() == pytest.approx(-1.3)


def test_balance_loss_by_hand():
    # 4 sub-images, all in class 0 -> means (1, 0, 0): |1 - 1/3| + 2/3 = 4/3
    p = torch.zeros(2, 3, 1, 2)
    p[:, 0] = 1
    assert balance_loss(p).item() == pytest.approx(4 / 3)
    assert balance_loss(torch.full((2, 3, 1, 2), 1 / 3)).item() == pytest.approx(0.0, abs=1e-7)


def test_nearest_up_exact():
    t = torch.arange(6.0).view(1, 1, 2, 3)
    up = nearest_up(t, 4, 7, 9)
    assert up.shape == (1, 1, 7, 9)
    assert up[0, 0, 3, 4].item() == 1 and up[0, 0, 4, 8].item() == 5 and up[0, 0, 6, 0].item() == 3


def _hand_output(logits_last: torch.Tensor, targets: list[torch.Tensor], anchor=None) -> ModelOutput:
    anchor = targets[-1] if anchor is None else anchor
    return ModelOutput(
        images=list(targets), outputs=list(targets), logits=[None, logits_last], anchors=[None, anchor]
    )


def test_cross_entropy_value_and_eq6():
    cfg = TrainConfig(loss="cs", bins=4, alpha=0.5, charbonnier_eps=1e-3)
    loss = build_loss(cfg)
    # one pixel per image; GT 0.30 -> bin 1 of 4; logits (0, ln 2, 0, 0) -> q_1 = 2/5
    t_last = torch.tensor([0.30]).view(1, 1, 1, 1)
    t_first = torch.zeros(1, 1, 1, 1)
    logits = torch.tensor([0.0, math.log(2), 0.0, 0.0]).view(1, 4, 1, 1)
    total, terms = loss(_hand_output(logits, [t_first, t_last]), [t_first, t_last], step=0)
    ce = -math.log(2 / 5)
    assert terms["l_c1"] == pytest.approx(ce, rel=1e-6)
    assert terms["bin_acc"] == 1.0
    assert terms["l_r"] == pytest.approx(2e-3)  # Charbonnier of zero error = eps, two levels summed
    assert total.item() == pytest.approx(2e-3 + 0.5 * ce, rel=1e-6)  # Eq. 6
    assert terms["loss"] == pytest.approx(total.item())


def test_alpha_warmup():
    loss = build_loss(TrainConfig(loss="cs", alpha=2.0, alpha_warmup_steps=100))
    assert [loss.alpha_at(s) for s in (0, 50, 100, 1000)] == [0.0, 1.0, 2.0, 2.0]
    assert build_loss(TrainConfig(loss="cs", alpha=2.0)).alpha_at(0) == 2.0


def test_fd_terms_and_l1_has_no_classification():
    cfg = TrainConfig(loss="fd", beta=0.1, gamma=0.5, charbonnier_eps=0.0)
    t = [torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 4, 4)]
    p = torch.tensor([0.5, 0.3, 0.2]).view(1, 3, 1, 1)
    out = ModelOutput(images=t, outputs=t, logits=[None, None], class_logits=p.log(), class_probs=p)
    total, terms = build_loss(cfg)(out, t)
    bal = abs(0.5 - 1 / 3) + abs(0.3 - 1 / 3) + abs(0.2 - 1 / 3)
    assert terms["l_c2"] == pytest.approx(-0.6)
    assert terms["balance"] == pytest.approx(bal)
    assert terms["area"] == pytest.approx(0.5 * 3 + 0.3 * 5 + 0.2 * 7)
    assert total.item() == pytest.approx(0.1 * -0.6 + 0.5 * bal, rel=1e-6)
    total, terms = build_loss(TrainConfig(loss="l1", charbonnier_eps=0.0))(
        ModelOutput(images=t, outputs=[x + 0.25 for x in t], logits=[None, None]), t
    )
    assert set(terms) == {"l_r", "loss"} and total.item() == pytest.approx(0.5)


def test_mismatched_targets_raise():
    t = [torch.zeros(1, 1, 4, 4)]
    out = ModelOutput(images=t, outputs=t, logits=[None])
    with pytest.raises(ValueError):
        build_loss(TrainConfig())(out, [torch.zeros(1, 1, 8, 8)])
    with pytest.raises(ValueError):
        build_loss(TrainConfig())(out, t + t)


def test_window_cross_entropy_by_hand():
    """fgd_head window: CE over the 2w+1 window bins; a GT bin outside the window targets the nearest edge."""
    cfg = TrainConfig(loss="cs", bins=8, alpha=1.0, charbonnier_eps=0.0)
    # w = 1 (3 channels), two pixels: window centres k0 = 3 and 2; GT bins 3 (inside, j = 1) and 7 (outside
    # above -> edge j = 2); logits (0, ln 2, 0) at both -> q = (1/4, 1/2, 1/4)
    logits = torch.tensor([0.0, math.log(2), 0.0]).view(1, 3, 1, 1).repeat(1, 1, 1, 2)
    centers = torch.tensor([3, 2]).view(1, 1, 1, 2)
    t_last = torch.tensor([3.5 / 8, 7.2 / 8]).view(1, 1, 1, 2)
    t_first = torch.zeros(1, 1, 1, 1)
    g = BinGrid(8)
    anchor = g.anchor(torch.tensor([3.0, 3.0]).view(1, 1, 1, 2))  # argmax j = 1 -> bins 3 and 2
    anchor[..., 1] = g.anchor(torch.tensor(2.0))
    out = ModelOutput(images=[t_first, t_last], outputs=[t_first, t_last], logits=[None, logits],
                      anchors=[None, anchor], centers=[None, centers])  # fmt: skip
    total, terms = build_loss(cfg)(out, [t_first, t_last])
    want = (-math.log(1 / 2) - math.log(1 / 4)) / 2
    assert terms["l_c1"] == pytest.approx(want, rel=1e-6)
    assert terms["in_window"] == pytest.approx(0.5)
    assert terms["bin_acc"] == pytest.approx(0.5)  # pixel 1: chosen 3 + 1 - 1 = 3 = GT; pixel 2: 2 != 7
    assert total.item() == pytest.approx(want, rel=1e-6)
    # below the window: GT bin 0, centre 5 -> edge j = 0; chosen bin at the lower range edge is clamped to 0
    logits = torch.tensor([5.0, 0.0, 0.0]).view(1, 3, 1, 1)
    t_last = torch.tensor([0.01]).view(1, 1, 1, 1)
    for k0, acc in ((5, 0.0), (0, 1.0)):  # centre 0: argmax j = 0 -> bin -1 -> clamped to 0 = GT
        chosen = g.anchor(torch.tensor(max(k0 - 1, 0.0)).view(1, 1, 1, 1))
        out = ModelOutput(images=[t_first, t_last], outputs=[t_first, t_last], logits=[None, logits],
                          anchors=[None, chosen], centers=[None, torch.tensor([k0]).view(1, 1, 1, 1)])  # fmt: skip
        _, terms = build_loss(cfg)(out, [t_first, t_last])
        assert terms["bin_acc"] == acc
        edge = 0 if k0 == 5 else 1  # k0 = 0: GT bin 0 is inside, j = 1
        assert terms["l_c1"] == pytest.approx(
            -torch.log_softmax(logits[0, :, 0, 0], 0)[edge].item(), rel=1e-6
        )


def test_window_also_supervises_the_regression_image():
    """fgd_head window: L adds the Charbonnier of I at the head level (l_i), so I keeps a gradient (LOSS.md)."""
    cfg = TrainConfig(loss="cs", bins=8, alpha=0.0, charbonnier_eps=0.0)
    t_first, t_last = torch.zeros(1, 1, 1, 1), torch.full((1, 1, 1, 2), 0.5)
    image = torch.tensor([0.1, 0.8]).view(1, 1, 1, 2).requires_grad_()
    out = ModelOutput(images=[t_first, image], outputs=[t_first, t_last], logits=[None, torch.zeros(1, 3, 1, 2)],
                      anchors=[None, t_last], centers=[None, torch.tensor([4, 4]).view(1, 1, 1, 2)])  # fmt: skip
    total, terms = build_loss(cfg)(out, [t_first, t_last])
    assert terms["l_i"] == pytest.approx((0.4 + 0.3) / 2)
    assert total.item() == pytest.approx(terms["l_r"] + terms["l_i"])
    total.backward()
    assert torch.allclose(image.grad, torch.tensor([-0.5, 0.5]).view(1, 1, 1, 2))  # d mean|I - T| / dI
    # the K-bin heads (no centres) keep Eq. 5 as it was: no l_i
    _, terms = build_loss(cfg)(ModelOutput(images=out.images, outputs=out.outputs, logits=[None, None]),
                               [t_first, t_last])  # fmt: skip
    assert "l_i" not in terms


# ------------------------------------------------------------------------------------ the new readings
def test_two_hot_labels_by_hand():
    """GT value at bin position 2.8 (K = 4): centres 2.5 and 3.5 share the weight 0.7 / 0.3; expectation = 2.8."""
    p = two_hot(torch.tensor([[[2.8, 0.2, 3.9, 1.5]]]), 4)  # (N=1, H=1, W=4) -> (1, 4, 1, 4)
    want = torch.tensor([[0, 0, 0.7, 0.3], [1, 0, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0]]).T
    assert torch.allclose(p[0, :, 0], want, atol=1e-6)  # edges: all the weight on the edge bin
    centres = torch.arange(4).float() + 0.5
    assert (p[0, :, 0, 0] * centres).sum().item() == pytest.approx(2.8)
    assert torch.allclose(p.sum(1), torch.ones(1, 1, 4))


def test_twohot_cross_entropy_by_hand():
    """CE with the two-hot label: -(0.7 log q_2 + 0.3 log q_3); q from logits (0, 0, ln 3, ln 2): 1/7 ... 3/7, 2/7."""
    g = BinGrid(4)
    t = torch.tensor([2.8 / 4]).view(1, 1, 1, 1)
    logits = torch.tensor([0.0, 0.0, math.log(3), math.log(2)]).view(1, 4, 1, 1)
    got = classification_loss(logits, t, None, g, "twohot").item()
    assert got == pytest.approx(-(0.7 * math.log(3 / 7) + 0.3 * math.log(2 / 7)), rel=1e-6)


def test_ordinal_loss_by_hand():
    """DORN: K = 4, GT bin 2 -> targets (z >= t_1, z >= t_2, z >= t_3) = (1, 1, 0); logits (2, 0, -1)."""
    g = BinGrid(4)
    t = torch.tensor([2.3 / 4]).view(1, 1, 1, 1)
    logits = torch.tensor([2.0, 0.0, -1.0]).view(1, 3, 1, 1)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    want = -(math.log(sig(2.0)) + math.log(sig(0.0)) + math.log(1 - sig(-1.0)))
    assert classification_loss(logits, t, None, g, "ordinal").item() == pytest.approx(want, rel=1e-6)


def test_level_weights_pixels_weigh_the_finest_level_four_times():
    """LapSRN sums over pixels: L_r = 1/4 * L(level 0) + L(level 1) for x4 (level_weights pixels)."""
    t = [torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 4, 4)]
    outs = [torch.full((1, 1, 2, 2), 0.4), torch.full((1, 1, 4, 4), 0.1)]
    out = ModelOutput(images=outs, outputs=outs, logits=[None, None])
    _, eq = build_loss(TrainConfig(charbonnier_eps=0.0))(out, t)
    _, px = build_loss(TrainConfig(charbonnier_eps=0.0, level_weights="pixels"))(out, t)
    assert eq["l_r"] == pytest.approx(0.5)
    assert px["l_r"] == pytest.approx(0.4 / 4 + 0.1)
