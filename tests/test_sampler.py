"""Training patches: shapes per scale, pyramid targets, augmentation, seeds, DataLoader workers."""

import numpy as np
import pytest
import torch
from PIL import Image

from fgdsr.config import TrainConfig
from fgdsr.data.color import T
from fgdsr.data.imresize import imresize
from fgdsr.data.sampler import TrainPatches, infinite_batches, level_sizes, make_train_loader


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("patches") / "HR"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(90, 120), (140, 100), (40, 50)]):  # the last one is smaller than a patch
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def _cfg(folder, **kw):
    base = dict(train_dataset=str(folder), patch_size=48, batch_size=4, scale=4, workers=0)
    base.update(kw)
    return TrainConfig(**base)


def test_level_sizes():
    assert level_sizes(128, 4) == [64, 128]
    assert level_sizes(128, 8) == [32, 64, 128]
    assert level_sizes(128, 2) == [128]
    assert level_sizes(96, 3) == [96]


@pytest.mark.parametrize(
    "scale,patch,sides", [(2, 48, [48]), (3, 48, [48]), (4, 48, [24, 48]), (8, 48, [12, 24, 48])]
)
def test_shapes_and_pyramid(folder, scale, patch, sides):
    ds = TrainPatches(_cfg(folder, scale=scale, patch_size=patch), seed=1)
    for i in range(6):
        lr, targets = ds[i]
        assert lr.shape == (1, patch // scale, patch // scale) and lr.dtype == torch.float32
        assert [t.shape[-1] for t in targets] == sides
        hr = targets[-1]
        assert 0.05 < hr.mean() < 0.95 and hr.min() > -0.1 and hr.max() < 1.1
        torch.testing.assert_close(lr, imresize(hr[None], size=(patch // scale,) * 2)[0])
        for t in targets[:-1]:
            torch.testing.assert_close(t, imresize(hr[None], size=(t.shape[-1],) * 2)[0])


def test_reproducible_per_seed_and_index(folder):
    a, b = TrainPatches(_cfg(folder), seed=3), TrainPatches(_cfg(folder), seed=3)
    for i in (0, 5, 123456789):
        torch.testing.assert_close(a[i][0], b[i][0], rtol=0, atol=0)
    c = TrainPatches(_cfg(folder), seed=4)
    assert not torch.equal(a[0][1][-1], c[0][1][-1])
    assert not torch.equal(a[0][1][-1], a[1][1][-1])


def test_without_downscale_patch_is_a_dihedral_transform_of_the_y_image(tmp_path):
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    (tmp_path / "HR").mkdir()
    Image.fromarray(img).save(tmp_path / "HR" / "a.png")
    y = torch.from_numpy(16.0 + img.astype(np.float64) @ T[0] / 255.0).float() / 255.0
    variants = [torch.rot90(v, k) for v in (y, torch.flip(y, (0,))) for k in range(4)]
    cfg = _cfg(tmp_path / "HR", patch_size=32, random_downscale=False)
    ds = TrainPatches(cfg, seed=0)
    seen = set()
    for i in range(40):
        hr = ds[i][1][-1][0]
        match = [k for k, v in enumerate(variants) if torch.allclose(hr, v, atol=1e-5)]
        assert match, "patch is not a flip/rotation of the image"
        seen.add(match[0])
    assert len(seen) >= 6  # the augmentation visits (nearly) all 8 transforms


def test_rgb_mode(folder):
    lr, targets = TrainPatches(_cfg(folder), seed=0, color="rgb")[0]
    assert lr.shape == (3, 12, 12) and targets[-1].shape == (3, 48, 48)


def test_loader_batches_endless_and_resumable(folder):
    cfg = _cfg(folder, pyramid_on="loader")
    it = infinite_batches(make_train_loader(cfg, seed=7))
    batches = [next(it) for _ in range(3)]
    lr, targets = batches[0]
    assert lr.shape == (4, 1, 12, 12) and [t.shape for t in targets] == [(4, 1, 24, 24), (4, 1, 48, 48)]
    resumed = next(iter(make_train_loader(cfg, seed=7, start_step=2)))
    torch.testing.assert_close(resumed[0], batches[2][0], rtol=0, atol=0)


@pytest.mark.slow
def test_workers_give_the_same_batches(folder):
    for path in ("loader", "device"):
        cfg = _cfg(folder, pyramid_on=path)
        a = iter(make_train_loader(cfg, seed=2))
        b = iter(make_train_loader(cfg.replace(workers=2), seed=2))
        for _ in range(3):
            x, y = next(a), next(b)
            if path == "device":  # HR patches
                torch.testing.assert_close(x, y, rtol=0, atol=0)
                continue
            torch.testing.assert_close(x[0], y[0], rtol=0, atol=0)
            torch.testing.assert_close(x[1][-1], y[1][-1], rtol=0, atol=0)


def test_large_sets_are_read_lazily_with_the_same_samples(folder, monkeypatch):
    import fgdsr.data.sampler as sampler

    eager = TrainPatches(_cfg(folder), seed=9)
    monkeypatch.setattr(sampler, "PRELOAD_MAX_IMAGES", 0)
    lazy = TrainPatches(_cfg(folder), seed=9)
    assert eager.preloaded and not lazy.preloaded and lazy.images is None
    for i in range(4):
        torch.testing.assert_close(lazy[i][1][-1], eager[i][1][-1], rtol=0, atol=0)


def _y_variants(img):
    y = torch.from_numpy(16.0 + img.astype(np.float64) @ T[0] / 255.0).float() / 255.0
    flips = [y, torch.flip(y, (1,)), torch.flip(y, (0,)), torch.flip(y, (0, 1))]
    rotations = [torch.rot90(v, k) for v in (y, torch.flip(y, (0,))) for k in (1, 3)]  # the 4 non-flip ones
    return flips, rotations


def test_augment_flip_never_rotates_and_both_are_pure(tmp_path):
    """augment: flip (the paper) gives only the 4 flips; dihedral also the 4 transposing transforms."""
    rng = np.random.default_rng(6)
    img = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    (tmp_path / "HR").mkdir()
    Image.fromarray(img).save(tmp_path / "HR" / "a.png")
    flips, rotations = _y_variants(img)
    seen = {}
    for augment in ("flip", "dihedral"):
        cfg = _cfg(tmp_path / "HR", patch_size=32, random_downscale=False, augment=augment)
        ds = TrainPatches(cfg, seed=0)
        kinds = []
        for i in range(48):
            hr = ds[i][1][-1][0]
            is_flip = any(torch.allclose(hr, v, atol=1e-5) for v in flips)
            is_rot = any(torch.allclose(hr, v, atol=1e-5) for v in rotations)
            assert is_flip != is_rot  # exactly one kind (the random image has no symmetry)
            kinds.append("flip" if is_flip else "rot")
        seen[augment] = kinds
        again = TrainPatches(cfg, seed=0)  # a pure function of (seed, index)
        for i in (0, 7, 10**9):
            assert torch.equal(ds[i][0], again[i][0]) and torch.equal(ds[i][1][-1], again[i][1][-1])
    assert set(seen["flip"]) == {"flip"}
    assert seen["dihedral"].count("rot") >= 12  # about half of 48 samples transpose


def test_device_pyramid_equals_loader_pyramid(folder):
    """pyramid_on: device (HR patches from the loader, LR and targets batched) == loader path, float tolerance."""
    from fgdsr.data.sampler import make_pyramid

    for scale in (2, 4, 8):
        cfg = _cfg(folder, scale=scale, patch_size=48, random_downscale=True, pyramid_on="loader")
        lr_a, targets_a = next(iter(make_train_loader(cfg, seed=11)))
        hr = next(iter(make_train_loader(cfg.replace(pyramid_on="device"), seed=11)))
        assert hr.shape == (4, 1, 48, 48)
        lr_b, targets_b = make_pyramid(hr, scale)
        torch.testing.assert_close(lr_b, lr_a, rtol=0, atol=1e-6)
        assert len(targets_a) == len(targets_b)
        for a, b in zip(targets_a, targets_b, strict=True):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-6)
        assert torch.equal(targets_b[-1], targets_a[-1])  # the HR patch itself: bit-identical


def test_patch_larger_than_every_image_fails_fast(folder):
    """The largest image here is 140 x 100: a patch that no image holds is refused in one line."""
    from fgdsr.errors import UserError

    TrainPatches(_cfg(folder, patch_size=100), seed=0)  # fits the largest; smaller images are enlarged
    with pytest.raises(UserError) as e:
        TrainPatches(_cfg(folder, patch_size=104), seed=0)
    msg = str(e.value)
    assert "'patch_size'" in msg and "100 px" in msg and "patch_size <= 100" in msg and "\n" not in msg


def test_cli_train_patch_4096_on_builtin_photos_fails_fast(tmp_path):
    """Issue 15's row: `fgdsr train --set patch_size=4096` used to compute for minutes with no answer."""
    from typer.testing import CliRunner

    from orchestrator.cli import app

    r = CliRunner().invoke(app, ["train", "--set", "patch_size=4096", "--out", str(tmp_path / "run"), "-q"])
    lines = [ln for ln in r.output.splitlines() if ln.strip() and not ln.startswith(("train:", "precision:"))]
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), r.output
    assert "patch_size" in lines[0] and "1411 px" in lines[0] and "<= 1408" in lines[0]
