"""The Class-Module (FD's dynamic anchor area): ClassSR's init, its own Adam group, and that it learns.

docs/LOSS.md, "Eq. 4 and Fig. 4": at the old defaults its weight gradients (1e-10..1e-9) were below Adam's eps
(1e-8), so it moved at a few percent of the trunk's speed and its class logits stayed within ~1e-6 of each other.
"""

from __future__ import annotations

import copy

import pytest
import torch

from fgdsr.config import TrainConfig, load_config
from fgdsr.errors import UserError
from fgdsr.losses import build_loss
from fgdsr.losses.charbonnier import charbonnier
from fgdsr.losses.fgd import balance_loss, class_distance_loss
from fgdsr.models import build_model
from fgdsr.models.fgd import BinGrid, ClassModule


def test_classsr_init_body_scaled_fc_default():
    """Body convs: Kaiming(fan_in) x 0.1, zero bias; FC: nn.Linear's default, so class logits differ at init."""
    torch.manual_seed(0)
    cm = ClassModule(3, 16)
    w = cm.body[0].weight
    assert w.std().item() == pytest.approx(0.1 * (2 / w[0].numel()) ** 0.5, rel=0.15)
    assert all(m.bias.abs().max() == 0 for m in cm.body if isinstance(m, torch.nn.Conv2d))
    bound = 1 / cm.fc.weight[0].numel() ** 0.5  # kaiming_uniform(a=sqrt 5) = U(-1/sqrt(fan_in), +)
    assert cm.fc.weight.abs().max() <= bound and cm.fc.weight.std() > bound / 3
    x = torch.rand(8, 1, 32, 32)
    logits = cm(x)
    spread = (logits.max(1).values - logits.min(1).values).mean().item()
    assert spread > 1e-2  # the old init (FC x 0.1 too): ~1e-6


def _one_step_speed(class_eps: float) -> dict[str, float]:
    """mean |dw| / lr after one Adam step on a real tiny-config batch, per watched weight."""
    from fgdsr.data.sampler import make_pyramid, make_train_loader

    torch.manual_seed(0)
    cfg = load_config(None, {"loss": "fd", "class_eps": class_eps})
    model, loss_fn = build_model(cfg), build_loss(cfg)
    opt = torch.optim.Adam(model.optim_groups(), lr=cfg.lr)
    watch = {"trunk": model.trunk.levels[-1].convs[0].weight, "body": model.class_module.body[4].weight,
             "fc": model.class_module.fc.weight}  # fmt: skip
    before = {k: p.detach().clone() for k, p in watch.items()}
    lr, targets = make_pyramid(next(iter(make_train_loader(cfg))), cfg.scale)
    total, _ = loss_fn(model.forward_train(lr, targets), targets, 0)
    total.backward()
    opt.step()
    return {k: ((p.detach() - before[k]).abs().mean() / cfg.lr).item() for k, p in watch.items()}


def test_class_module_steps_like_the_trunk():
    """Its own Adam group (eps 1e-16): per-element steps of the same order as the trunk's (Adam's first step is
    lr * sign(g) where |g| >> eps). With Adam's default eps the body moved at ~5 % of that (the old defaults)."""
    speed = _one_step_speed(1e-16)
    assert speed["trunk"] > 0.5
    assert speed["body"] > 0.5 * speed["trunk"] and speed["fc"] > 0.5 * speed["trunk"]
    old = _one_step_speed(1e-8)
    assert old["body"] < 0.2 * old["trunk"]  # what the review measured: eps dominated its gradients


def test_class_module_learning_is_independent_of_the_loss_scale():
    """Scaling every loss weight (the whole loss) by 100 leaves the Class-Module's Adam trajectory unchanged.

    The trunk is frozen here: its own group keeps Adam's default eps, which is not negligible for all its
    parameters, so a moving trunk would feed the two runs different outputs after the first step.
    """
    torch.manual_seed(0)
    cfg = TrainConfig(loss="fd", depth=1, channels=8, patch_size=64, class_patch=16, train_decode="hard")
    a = build_model(cfg)
    for name, p in a.named_parameters():
        p.requires_grad_(name.startswith("class_module."))
    b = copy.deepcopy(a)
    loss_fn = build_loss(cfg)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 1, 16, 16, generator=g)
    targets = [torch.rand(4, 1, 32, 32, generator=g), torch.rand(4, 1, 64, 64, generator=g)]
    opts = [torch.optim.Adam(m.optim_groups(), lr=1e-3) for m in (a, b)]
    for _ in range(3):
        for model, opt, scale in ((a, opts[0], 1.0), (b, opts[1], 100.0)):
            total, _ = loss_fn(model.forward_train(x, targets), targets, 0)
            (scale * total).backward()
            opt.step()
            opt.zero_grad()
    # Elements whose gradient is itself ~1e-16 (float rounding around an exact zero) still see eps: a handful
    # out of thousands. Every other element follows the same trajectory.
    for pa, pb in zip(a.class_module.parameters(), b.class_module.parameters(), strict=True):
        assert ((pa - pb).abs() <= 1e-6).float().mean() >= 0.995


def test_class_module_learns_the_right_area_on_a_synthetic_task():
    """Tiles where the area matters: on noisy tiles the anchor is right and the regression 3 bins off (a narrow
    area, 3 bins, clamps the error); on flat tiles the regression is right and the anchor 2 bins off (only a wide
    area, 7 bins, keeps the regression). Trained by FD's own output mixing (SRModel._area_weights /
    _train_output) with L_r + beta*L_c2 + gamma*balance at the shipped weights, the Class-Module must pick
    area 3 on noisy and area 7 on flat tiles."""
    torch.manual_seed(0)
    cfg = TrainConfig(loss="fd", depth=1, channels=8, patch_size=64, class_patch=16, train_decode="hard")
    model = build_model(cfg)
    head = model.heads["1"]
    grid = BinGrid.from_config(cfg)
    opt = torch.optim.Adam(model.optim_groups(), lr=1e-3)
    g = torch.Generator().manual_seed(2)

    def batch(n: int):
        noisy = torch.arange(n) % 2 == 0
        x = torch.full((n, 1, 16, 16), 0.5) + 0.01 * torch.randn(n, 1, 16, 16, generator=g)
        x[noisy] = (0.5 + 0.25 * torch.randn(int(noisy.sum()), 1, 16, 16, generator=g)).clamp(0, 1)
        t = 0.2 + 0.6 * torch.rand(n, 1, 64, 64, generator=g)
        k = grid.index(t).float()
        sign = torch.randint(0, 2, t.shape, generator=g).float() * 2 - 1
        m = noisy.view(-1, 1, 1, 1)
        image = torch.where(m, t + sign * 3 * grid.width, t)  # noisy: regression 3 bins off
        anchor = torch.where(m, grid.anchor(k), grid.anchor(k + 2 * sign))  # flat: anchor 2 bins off
        return x, t, image, anchor, noisy

    for _step in range(150):
        x, t, image, anchor, _ = batch(8)
        probs = model.class_module(x).softmax(dim=1)
        areas = model._area_weights(x, probs, 1, image)
        s = model._train_output(head, None, None, image, anchor, None, None, 1, areas)
        loss = charbonnier(s, t, cfg.charbonnier_eps) + cfg.beta * class_distance_loss(probs)
        loss = loss + cfg.gamma * balance_loss(probs)
        loss.backward()
        opt.step()
        opt.zero_grad()
    x, *_, noisy = batch(64)
    with torch.no_grad():
        chosen = model.class_module(x).argmax(dim=1).flatten()
    assert (chosen[noisy] == 0).float().mean() > 0.95  # area 3
    assert (chosen[~noisy] == 2).float().mean() > 0.95  # area 7


def test_fd_training_tiles_must_be_whole():
    """The LR patch side must be a multiple of class_patch (else the Class-Module trains on replicate padding)."""
    with pytest.raises(UserError, match="class_patch.*16"):
        build_loss(TrainConfig(loss="fd", patch_size=64))  # LR 16 < 32
    build_loss(TrainConfig(loss="fd", patch_size=64, class_patch=16))
    build_loss(TrainConfig(loss="cs", patch_size=64))  # no Class-Module: no constraint
    build_model(TrainConfig(loss="fd", patch_size=64))  # inference / profiling: any size
    build_loss(load_config(None, {"loss": "fd"}))  # the shipped tiny config trains on whole tiles
