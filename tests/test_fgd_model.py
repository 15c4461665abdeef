"""SRModel with the FGD heads: shapes, inference == training (hard vs soft), gradients, baseline init, export."""

from __future__ import annotations

import math

import pytest
import torch

from fgdsr.config import TrainConfig
from fgdsr.errors import UserError
from fgdsr.losses import build_loss
from fgdsr.models import MODELS, SRModel, build_model
from fgdsr.models.fgd import BinGrid, PriorHead, channel_argmax, window_halfwidth, window_to_bin

G = BinGrid(32)


def anchor_value(k, bins=32):
    return BinGrid(bins).anchor(k)


def bin_index(y, bins=32):
    return BinGrid(bins).index(y)


def window_bin(logits, k0, w, bins=32):
    return window_to_bin(channel_argmax(logits).float(), k0, w, bins)


def tiny(loss: str, scale: int = 4, **kw) -> TrainConfig:
    """A small model; the hard training decode unless a test asks for another (the tests here that compare the
    training output with inference, or check which gradients flow, are about the hard path by default)."""
    kw.setdefault("train_decode", "hard")
    return TrainConfig(loss=loss, scale=scale, depth=1, channels=8, **kw)


def make(loss: str, scale: int = 4, seed: int = 0, **kw) -> SRModel:
    torch.manual_seed(seed)
    return build_model(tiny(loss, scale, **kw)).eval()


def targets_for(out) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.rand(i.shape, generator=g) for i in out.images]


def test_models_dict():
    assert set(MODELS) == {"lapsrn", "srcnn", "vdsr"}
    assert isinstance(build_model(TrainConfig(model="srcnn", loss="l1")), SRModel)


@pytest.mark.parametrize("loss", ["l1", "cs", "fd", "aux"])
@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_shapes_any_size(loss, scale):
    model = make(loss, scale)
    levels = {2: 1, 3: 2, 4: 2, 8: 3}[scale]
    sizes = [(13, 17), (40, 70)] if scale == 4 and loss == "fd" else [(13, 17)]  # 40x70: partial 32-tiles
    for h, w in sizes:
        x = torch.rand(2, 1, h, w)
        with torch.no_grad():
            y = model(x)
            out = model.forward_train(x)
        assert y.shape == (2, 1, h * scale, w * scale)
        assert len(out.outputs) == levels
        for lv, (img, s) in enumerate(zip(out.images, out.outputs, strict=True)):
            assert img.shape == s.shape == (2, 1, h * 2 ** (lv + 1), w * 2 ** (lv + 1))
        last = out.logits[-1]
        assert (last is None) == (loss == "l1")
        if last is not None:
            assert last.shape == (2, 32, h * 2**levels, w * 2**levels)
        if loss == "fd":
            assert out.class_probs.shape == (2, 3, -(-h // 32), -(-w // 32))
            assert torch.allclose(out.class_probs.sum(1), torch.ones(1))


def test_inference_equals_hard_training_path():
    """forward (argmax) == forward_train's S when the Class-Module is one-hot (soft mixing with one-hot P = hard)."""
    model = make("fd")
    x = torch.rand(1, 1, 36, 40)
    for cls in range(3):
        with torch.no_grad():
            model.class_module.fc.weight.zero_()
            model.class_module.fc.bias.copy_(torch.full((3,), -200.0))
            model.class_module.fc.bias[cls] = 200.0
            # non-trivial head so that the predicted bin differs from the regression's own bin somewhere
            model.heads["1"].cls.weight.normal_(0, 1.0)
            out = model.forward_train(x)
            y = model(x)
        assert out.class_probs[:, cls].min().item() == 1.0
        assert torch.allclose(out.outputs[-1], y, atol=1e-6)
        k = out.logits[-1].argmax(1, keepdim=True)
        assert (k != bin_index(out.images[-1], 32)).any()
        half = model.halfwidths[cls].item()
        assert ((y - anchor_value(k, 32)).abs() <= half + 1e-6).all()  # S stays in [A - h, A + h]


def test_cs_area_bounds_and_gt_teacher_forcing():
    model = make("cs", anchor_source="gt")
    x = torch.rand(1, 1, 12, 12)
    g = torch.Generator().manual_seed(1)
    targets = [torch.rand(1, 1, 24, 24, generator=g), torch.rand(1, 1, 48, 48, generator=g)]
    out = model.forward_train(x, targets)
    t = targets[-1]
    a = anchor_value(bin_index(t, 32), 32)
    assert ((out.outputs[-1] - a).abs() <= 2.5 / 32 + 1e-6).all()
    with pytest.raises(ValueError):
        model.forward_train(x)


@pytest.mark.parametrize("fgd_head", ["prior", "input", "literal"])
def test_gradients_reach_head_trunk_and_class_module(fgd_head):
    model = make("fd", fgd_head=fgd_head, gamma=0.1).train()
    x = torch.rand(2, 1, 20, 36)
    out = model.forward_train(x)
    total, terms = build_loss(model.cfg)(out, targets_for(out), step=1)
    total.backward()
    head = model.heads["1"]
    groups = {
        "head": [head.cls.weight],
        "trunk_first": [model.trunk.input_conv.weight],
        "trunk_last": [model.trunk.levels[-1].convs[0].weight],
        "class_module_first": [model.class_module.body[0].weight],
        "class_module_fc": [model.class_module.fc.weight],
    }
    if fgd_head == "literal":
        groups["offset"] = [head.offset.weight]
    if fgd_head == "prior":
        groups["tau"] = [head.log_tau]
    if fgd_head == "input":
        groups["image_weight"] = [head.image_weight]
    for name, params in groups.items():
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params), name
    assert {"loss", "l_r", "l_c1", "l_c2", "balance", "bin_acc", "area"} <= set(terms)


def test_aux_forward_is_the_baseline():
    base = make("l1")
    aux = make("aux", seed=5)
    aux.load_baseline(base.state_dict())  # keys with the trunk. prefix
    x = torch.rand(2, 1, 15, 21)
    with torch.no_grad():
        assert torch.equal(aux(x), base(x))
    assert set(aux.state_dict()) - set(base.state_dict())  # the head exists, only for training
    assert sum(p.numel() for p in aux.trunk.parameters()) == sum(p.numel() for p in base.parameters())


@pytest.mark.parametrize("fgd_head", ["prior", "window"])
@pytest.mark.parametrize("loss", ["cs", "fd"])
def test_init_from_baseline_starts_at_baseline_output(loss, fgd_head):
    """With zero-init heads the predicted bin is the regression's own: S = A + h tanh((I-A)/h), |I - A| <= 1/2K.

    Max deviation h*(x - tanh x), x = 1/(area) <= 1/3: 5.6e-4 (area 3), 2.1e-4 (area 5), 1.1e-4 (area 7).
    """
    base = make("l1")
    model = make(loss, seed=3, fgd_head=fgd_head)
    model.trunk.load_state_dict(base.trunk.state_dict())  # what train.py's --init-from does
    x = torch.rand(2, 1, 24, 24)
    with torch.no_grad():
        ref = base(x)
        y = model(x)
        s = model.forward_train(x).outputs[-1]
    inside = (ref >= 0) & (ref <= 1)
    bound = 5.7e-4 if loss == "fd" else 2.1e-4
    assert (y - ref)[inside].abs().max().item() <= bound
    assert (s - ref)[inside].abs().max().item() <= bound


def test_head_levels_all_and_head_kernel_3():
    model = make("cs", scale=8, head_levels="all", head_kernel=3)
    out = model.forward_train(torch.rand(1, 1, 8, 8))
    assert all(lg is not None and lg.shape[1] == 32 for lg in out.logits)
    assert model.heads["0"].cls.kernel_size == (3, 3)


def test_user_errors():
    with pytest.raises(UserError, match="loss"):
        build_model(TrainConfig(model="vdsr", loss="fd"))
    with pytest.raises(UserError, match="fgd_head"):
        build_model(tiny("cs", fgd_head="nope"))


def test_param_count_of_the_heads():
    full = {loss: build_model(TrainConfig(loss=loss)) for loss in ("l1", "cs", "fd")}
    n = {k: sum(p.numel() for p in m.parameters()) for k, m in full.items()}
    assert n["l1"] == 814_242  # official x4 LapSRN
    assert n["cs"] - n["l1"] == 64 * 32 + 32 + 1  # 1x1 head + tau
    class_module = 16 * 128 + 128 + 3 * (128 * 128 + 128) + 128 * 32 + 32 + 32 * 3 + 3
    assert n["fd"] - n["cs"] == class_module
    win = {loss: build_model(TrainConfig(loss=loss, fgd_head="window")) for loss in ("cs", "fd")}
    assert sum(p.numel() for p in win["cs"].parameters()) - n["l1"] == 64 * 7 + 7 + 1  # w = 3
    assert sum(p.numel() for p in win["fd"].parameters()) - n["l1"] == 64 * 9 + 9 + 1 + class_module  # w = 4
    inp = build_model(TrainConfig(loss="cs", fgd_head="input"))
    assert sum(p.numel() for p in inp.parameters()) - n["l1"] == 64 * 32 + 32 + 32  # conv over [F, I]


@pytest.mark.slow
def _assert_exports_with_dynamic_shapes(model) -> None:
    """torch.export with symbolic N/H/W; the exported program equals the eager model at two other shapes."""
    from torch.export import Dim, export

    x = torch.rand(2, 1, 40, 36)
    n, h, w = Dim("n", min=1, max=8), Dim("h", min=8, max=512), Dim("w", min=8, max=512)
    ep = export(model, (x,), dynamic_shapes={"x": {0: n, 2: h, 3: w}})
    for shape in [(1, 1, 33, 47), (3, 1, 64, 20)]:
        z = torch.rand(shape)
        with torch.no_grad():
            assert torch.allclose(ep.module()(z), model(z), atol=1e-6)


def test_torch_export_dynamic_shapes_cs():
    """cs through torch.export with symbolic N/H/W (fd: the ONNX test below, which exports the same way)."""

    model = make("cs")
    _assert_exports_with_dynamic_shapes(model)


@pytest.mark.slow
@pytest.mark.parametrize("fgd_head", ["prior", "window"])
def test_onnx_dynamo_export_fd_matches_onnxruntime(tmp_path, fgd_head):
    """The FD inference graph (Class-Module, argmax, gather, tanh) exports with symbolic N/H/W; ORT == torch."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from torch.export import Dim

    model = make("fd", fgd_head=fgd_head)
    with torch.no_grad():
        model.heads["1"].cls.weight.normal_(
            0, 0.5
        )  # argmax decided by the head somewhere, not the prior alone
    x = torch.rand(1, 1, 40, 36)
    prog = torch.onnx.export(
        model,
        (x,),
        dynamo=True,
        dynamic_shapes={"x": {0: Dim("n"), 2: Dim("h"), 3: Dim("w")}},
        input_names=["lr"],
        output_names=["sr"],
        external_data=False,
    )
    path = tmp_path / "fd.onnx"
    prog.save(str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert all(isinstance(d, str) for d in sess.get_inputs()[0].shape[::2])  # n, h, w symbolic
    for shape in [(1, 1, 33, 47), (2, 1, 70, 20)]:
        z = torch.rand(shape)
        with torch.no_grad():
            ref = model(z).numpy()
        got = sess.run(None, {"lr": z.numpy()})[0]
        assert got.shape == ref.shape
        assert abs(got - ref).max() < 1e-5


# ------------------------------------------------------------------------------------ fgd_head "window"
def test_window_halfwidth_from_the_widest_area():
    assert window_halfwidth(tiny("fd")) == 4  # areas 3/5/7: (7 + 1)/2, 9 channels
    assert window_halfwidth(tiny("cs")) == 3  # static area 5: 7 channels
    assert window_halfwidth(tiny("aux")) == 3
    assert window_halfwidth(tiny("fd", areas=[3, 9])) == 5
    assert window_halfwidth(tiny("cs", bins=4, static_area=9)) == 3  # capped at K - 1


def test_channel_argmax_is_argmax_with_first_max_on_ties():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 3, (2, 9, 7, 5), generator=g).float()  # many ties
    assert torch.equal(channel_argmax(x), x.argmax(dim=1, keepdim=True))


def test_window_logits_by_brute_force():
    """logit_d = conv(F)_d - tau*|K*(I - A_{k0+d})| with A the (virtual, unclamped) anchor (k0 + d + 0.5)/K."""
    model = make("cs", fgd_head="window")
    head = model.heads["1"]
    with torch.no_grad():
        head.cls.weight.normal_(0, 1.0)
        head.cls.bias.normal_(0, 1.0)
        head.log_tau.fill_(0.3)
    g = torch.Generator().manual_seed(2)
    feat = torch.randn(1, 8, 5, 6, generator=g)
    image = torch.rand(1, 1, 5, 6, generator=g) * 1.4 - 0.2  # also outside [0, 1]
    with torch.no_grad():
        logits, k0 = head(feat, image)
        conv = head.cls(feat)
    w, k = 3, 32
    assert logits.shape == (1, 2 * w + 1, 5, 6)
    assert torch.equal(k0.long(), bin_index(image, k))
    tau = torch.exp(torch.tensor(0.3))
    for j in range(2 * w + 1):
        anchor = (k0 + (j - w) + 0.5) / k
        want = conv[:, j : j + 1] - tau * (k * (image - anchor)).abs()
        assert torch.allclose(logits[:, j : j + 1], want, atol=1e-4)
    chosen = window_bin(logits, k0, w, k)
    assert torch.equal(chosen, (k0 + logits.argmax(1, keepdim=True) - w).clamp(0, k - 1))
    assert ((chosen - k0).abs() <= w).all() and chosen.min() >= 0 and chosen.max() <= k - 1


@pytest.mark.parametrize("loss", ["cs", "fd"])
def test_window_zero_init_is_the_prior_head(loss):
    """Zero-init: both heads choose bin(I) (the Laplace prior's maximum), so the outputs are identical."""
    prior = make(loss, seed=3)
    window = make(loss, seed=3, fgd_head="window")
    same = {k: v for k, v in prior.state_dict().items() if not k.startswith("heads.1.cls")}
    window.load_state_dict(same, strict=False)  # trunk, tau (+ Class-Module); the head convs differ in shape
    x = torch.rand(2, 1, 24, 40) * 1.2 - 0.1  # regression partly outside [0, 1]
    with torch.no_grad():
        assert torch.equal(window(x), prior(x))
        out = window.forward_train(x)
    assert out.logits[-1].shape[1] == 2 * window.window + 1
    assert torch.equal(out.centers[-1], bin_index(out.images[-1], 32))
    assert torch.equal(window_bin(out.logits[-1], out.centers[-1].float(), window.window, 32).long(),
                       out.centers[-1])  # fmt: skip


def test_window_inference_equals_hard_training_path():
    """fd + window: forward (hard) == forward_train (one-hot P); the bin stays within w of bin(I); S in its area."""
    model = make("fd", fgd_head="window")
    x = torch.rand(1, 1, 36, 40)
    w = model.window
    for cls in range(3):
        with torch.no_grad():
            model.class_module.fc.weight.zero_()
            model.class_module.fc.bias.copy_(torch.full((3,), -200.0))
            model.class_module.fc.bias[cls] = 200.0
            model.heads["1"].cls.weight.normal_(0, 100.0)  # features are ~1e-3 in this untrained trunk
            model.heads["1"].cls.bias.zero_()
            model.heads["1"].cls.bias[w + 1] = 0.5  # favour d = +1 where I is in the upper half of its bin
            out = model.forward_train(x)
            y = model(x)
        assert torch.allclose(out.outputs[-1], y, atol=1e-6)
        k = window_bin(out.logits[-1], out.centers[-1].float(), w, 32)
        moved = k != out.centers[-1]
        assert moved.any() and ((k - out.centers[-1]).abs() <= w).all()
        half = model.halfwidths[cls].item()
        assert ((y - anchor_value(k, 32)).abs() <= half + 1e-6).all()


@pytest.mark.parametrize("loss", ["cs", "fd"])
def test_window_gradients_reach_head_tau_trunk(loss):
    model = make(loss, fgd_head="window", gamma=0.1).train()
    x = torch.rand(2, 1, 20, 36)
    out = model.forward_train(x)
    total, terms = build_loss(model.cfg)(out, targets_for(out), step=1)
    total.backward()
    head = model.heads["1"]
    params = {"head": head.cls.weight, "tau": head.log_tau, "trunk_first": model.trunk.input_conv.weight,
              "trunk_last": model.trunk.levels[-1].convs[0].weight}  # fmt: skip
    if loss == "fd":
        params["class_module_first"] = model.class_module.body[0].weight
    for name, p in params.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert head.offset is None
    assert 0.0 <= terms["in_window"] <= 1.0 and "bin_acc" in terms


@pytest.mark.slow
def test_window_torch_export_dynamic_shapes():

    model = make("cs", fgd_head="window")
    with torch.no_grad():
        model.heads["1"].cls.weight.normal_(0, 0.5)
    _assert_exports_with_dynamic_shapes(model)


@pytest.mark.parametrize(
    "fgd_head,labels,kernel,dtype",
    [("prior", "onehot", 1, torch.float32), ("literal", "onehot", 1, torch.float32),
     ("window", "onehot", 1, torch.float32), ("prior", "onehot", 3, torch.float32),
     ("prior", "onehot", 1, torch.float64), ("input", "onehot", 1, torch.float32),
     ("prior", "ordinal", 1, torch.float32), ("input", "ordinal", 1, torch.float32),
     ("prior", "twohot", 1, torch.float32)],
)  # fmt: skip
def test_head_infer_is_the_hard_decode_of_the_training_logits(fgd_head, labels, kernel, dtype):
    """AnchorHead.infer (GEMM for a 1x1 head on float32, else conv) == hard_anchor(forward's logits).

    GEMM and conv sum in different orders, so pixels whose two best logits (or an ordinal logit and 0) are within
    1e-4 may resolve differently: they are left out, and must be rare.
    """
    model = make("fd", fgd_head=fgd_head, head_kernel=kernel, bin_labels=labels)
    head = model.heads["1"].to(dtype)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        head.cls.weight.copy_(torch.randn(head.cls.weight.shape, generator=g) * 0.3)
        head.cls.bias.add_(torch.randn(head.cls.bias.shape, generator=g))
        if isinstance(head, PriorHead):
            head.log_tau.fill_(-0.5)  # weaker prior: the conv decides at many pixels
        feat = torch.randn(2, 8, 9, 13, generator=g, dtype=dtype)
        image = (torch.rand(2, 1, 9, 13, generator=g) * 1.2 - 0.1).to(dtype)
        logits, k0 = head(feat, image)
        want = head.hard_anchor(logits, k0)
        got = head.infer(feat, image)
        # traced (torch.compile, torch.export): the conv branch; dynamo's "eager" backend runs it without codegen
        torch._dynamo.reset()  # one compiled infer per case (else dynamo's recompile limit of 8 is reached)
        traced = torch.compile(head.infer, backend="eager", fullgraph=True)(feat, image)
    assert got.shape == (2, 1, 9, 13) and got.dtype == torch.float32
    if labels == "ordinal":
        clear = (logits.abs() > 1e-4).all(dim=1, keepdim=True)
    else:
        top2 = logits.topk(2, dim=1).values
        clear = (top2[:, :1] - top2[:, 1:]) > 1e-4
    assert clear.float().mean() > 0.95
    assert torch.allclose(got[clear], want[clear], atol=1e-6)
    assert torch.allclose(traced[clear], want[clear], atol=1e-6)
    assert (G.index(want) != G.index(image)).float().mean() > 0.2  # the head, not the prior, decides often


# ------------------------------------------------------------------------------------ decodes and readings
def _one_hot_class_module(model, cls: int) -> None:
    with torch.no_grad():
        model.class_module.fc.weight.zero_()
        model.class_module.fc.bias.copy_(torch.full((3,), -200.0))
        model.class_module.fc.bias[cls] = 200.0


@pytest.mark.parametrize(
    "fgd_head,labels", [("prior", "onehot"), ("input", "onehot"), ("prior", "ordinal"), ("input", "ordinal")]
)
@pytest.mark.parametrize("decode", ["soft", "st"])
def test_soft_decode_with_one_hot_q_is_the_inference_output(fgd_head, labels, decode):
    """train_decode soft/st with one-hot class probabilities q (and one-hot P) gives forward's output exactly."""
    model = make("fd", fgd_head=fgd_head, bin_labels=labels, train_decode=decode)
    x = torch.rand(1, 1, 36, 40)
    with torch.no_grad():
        bias = model.heads["1"].cls.bias
        if labels == "ordinal":  # o_k = +1e4 for k <= 10, -1e4 above: count 10 everywhere
            bias.copy_(torch.where(torch.arange(1, 32) <= 10, 1e4, -1e4))
        else:  # bin 10 wins everywhere by 1e4: softmax is exactly one-hot in float32
            bias.add_(torch.where(torch.arange(32) == 10, 1e4, 0.0))
    for cls in range(3):
        _one_hot_class_module(model, cls)
        with torch.no_grad():
            out = model.forward_train(x)
            y = model(x)
        half = model.halfwidths[cls].item()
        want = model.grid.anchor(torch.tensor(10.0)) + half * torch.tanh(
            (out.images[-1] - model.grid.anchor(torch.tensor(10.0))) / half
        )
        assert torch.equal(out.outputs[-1], y)
        assert torch.allclose(y, want, atol=1e-6)


@pytest.mark.parametrize("decode,reaches", [("hard", False), ("soft", True), ("st", True)])
@pytest.mark.parametrize("labels", ["onehot", "ordinal", "twohot"])
def test_regression_loss_reaches_the_head_only_with_soft_decoding(decode, reaches, labels):
    """alpha = 0 (no L_c1): the head's only signal is L_r; the hard (detached argmax) anchor gives it none."""
    model = make("cs", train_decode=decode, bin_labels=labels, alpha=0.0).train()
    with torch.no_grad():
        model.heads["1"].cls.weight.normal_(0, 0.5)  # a head that decides somewhere
    x = torch.rand(2, 1, 12, 12)
    out = model.forward_train(x)
    total, _ = build_loss(model.cfg)(out, targets_for(out), step=1)
    total.backward()
    grad = model.heads["1"].cls.weight.grad
    got = grad is not None and grad.abs().sum().item() > 0
    assert (
        got == reaches
    )  # hard: the decoded anchor is detached for every labelling (twohot: its expectation)


def test_ordinal_and_twohot_decodes_by_hand():
    """K = 4. ordinal logits (2, 0, -1): count of o_k >= 0 = 2 -> A = 2.5/4; soft count = sum sigmoid.
    twohot logits (0, 0, ln 3, ln 2): q = (1, 1, 3, 2)/7 -> expected anchor sum q_k (k + 0.5)/4."""
    cfg = TrainConfig(loss="cs", bins=4, depth=1, channels=8, bin_labels="ordinal")
    ordinal = build_model(cfg).heads["1"]
    o = torch.tensor([2.0, 0.0, -1.0]).view(1, 3, 1, 1)
    assert ordinal.hard_anchor(o, None).item() == pytest.approx(2.5 / 4)
    soft = torch.sigmoid(o).sum().item()
    y = torch.full((1, 1, 1, 1), 0.6)
    assert ordinal.soft_output(o, None, y, 1.0, None).item() == pytest.approx(
        (soft + 0.5) / 4 + torch.tanh(torch.tensor(0.6 - (soft + 0.5) / 4)).item(), rel=1e-6)  # fmt: skip
    twohot = build_model(cfg.replace(bin_labels="twohot")).heads["1"]
    q = torch.tensor([1.0, 1.0, 3.0, 2.0]) / 7
    t = torch.tensor([0.0, 0.0, math.log(3), math.log(2)]).view(1, 4, 1, 1)
    want = (q * (torch.arange(4) + 0.5) / 4).sum().item()
    assert twohot.hard_anchor(t, None).item() == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("fgd_head,labels", [("input", "onehot"), ("prior", "ordinal"), ("input", "ordinal")])
def test_new_heads_start_at_the_regression_bin(fgd_head, labels):
    """Zero-init conv: the input head's Gaussian prior / the ordinal ramp choose bin(I), as the prior head does."""
    model = make("cs", fgd_head=fgd_head, bin_labels=labels)
    x = torch.rand(2, 1, 24, 24) * 1.2 - 0.1
    with torch.no_grad():
        out = model.forward_train(x)
    image = out.images[-1]
    inside = (image > 0) & (image < 1)
    assert torch.equal(G.index(out.anchors[-1])[inside], G.index(image)[inside])


def test_head_detach_keeps_the_classification_loss_out_of_the_trunk():
    """head_detach: the trunk's gradient with alpha = 1 equals its gradient without L_c1 (alpha = 0)."""

    def trunk_grad(**kw) -> torch.Tensor:
        model = make("cs", seed=4, **kw).train()
        with torch.no_grad():
            model.heads["1"].cls.weight.normal_(0, 0.5)
        out = model.forward_train(torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(0)))
        total, _ = build_loss(model.cfg)(out, targets_for(out), step=1)
        total.backward()
        return model.trunk.levels[-1].convs[0].weight.grad.clone()

    assert torch.allclose(trunk_grad(alpha=1.0, head_detach=True), trunk_grad(alpha=0.0), atol=1e-9)
    assert not torch.allclose(trunk_grad(alpha=1.0), trunk_grad(alpha=0.0), atol=1e-9)


def test_reading_combinations_are_checked():
    with pytest.raises(UserError, match="bin_labels"):
        tiny("cs", fgd_head="window", bin_labels="ordinal").replace()
    with pytest.raises(UserError, match="train_decode"):
        tiny("cs").replace(train_decode="nope")
