"""Data set names, folders, joins, the built-in photos, and every bad data set -> UserError."""

import numpy as np
import pytest
from PIL import Image

from fgdsr.data.builtin import EVAL_FILES, TRAIN_FILES
from fgdsr.data.datasets import IMAGE_CACHE, default_data_root, resolve_dataset
from fgdsr.errors import UserError


def _make_set(root, name, n, sub="HR", mode="RGB"):
    folder = root / name / sub if sub else root / name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(len(name))
    for i in range(n):
        a = rng.integers(0, 256, size=(20 + i, 24, 3), dtype=np.uint8)
        Image.fromarray(a).convert(mode).save(folder / f"img{i}.png")
    return folder


def test_known_names_under_the_root(tmp_path):
    _make_set(tmp_path, "Set5", 3)
    _make_set(tmp_path, "T91", 2, sub=None)  # no HR/ subfolder: the folder itself
    _make_set(tmp_path, "DIV2K", 2, sub="DIV2K_train_HR")
    ds = resolve_dataset("set5", tmp_path)  # case-insensitive
    assert ds.name == "Set5" and ds.names == ["img0", "img1", "img2"]
    img = ds.image(1)
    assert img.shape == (21, 24, 3) and img.dtype == np.uint8 and not img.flags.writeable
    assert len(resolve_dataset("T91", tmp_path)) == 2
    assert len(resolve_dataset("DIV2K", tmp_path)) == 2
    joined = resolve_dataset("T91+Set5", tmp_path)
    assert len(joined) == 5 and joined.name == "T91+Set5"
    assert len(set(joined.names)) == 5  # duplicate stems made unique with the folder name
    assert joined.subset(2).names == joined.names[:2]


def test_env_data_root_and_folder_paths(tmp_path, monkeypatch):
    folder = _make_set(tmp_path, "Mine", 2)
    monkeypatch.setenv("FGDSR_DATA_ROOT", str(tmp_path))
    assert default_data_root() == tmp_path
    monkeypatch.delenv("FGDSR_DATA_ROOT")
    assert str(default_data_root()) == "datasets"
    assert resolve_dataset(str(folder.parent)).paths == resolve_dataset(str(folder)).paths
    assert resolve_dataset(str(folder)).name == "Mine"


def test_gray_sources_are_flagged(tmp_path):
    _make_set(tmp_path, "G", 1, mode="L")
    ds = resolve_dataset(str(tmp_path / "G"))
    assert ds.is_gray(0)
    img = ds.image(0)
    assert np.array_equal(img[..., 0], img[..., 2])


def test_images_are_decoded_once(tmp_path):
    _make_set(tmp_path, "C", 1)
    ds = resolve_dataset(str(tmp_path / "C"))
    assert ds.image(0) is ds.image(0)
    IMAGE_CACHE.clear()


def test_builtin_splits_are_fixed_disjoint_and_offline():
    ev, va, tr = (resolve_dataset(f"builtin-{s}") for s in ("eval", "val", "train"))
    assert len(ev) == len(EVAL_FILES) == 5 and len(tr) == len(TRAIN_FILES) == 12 and len(va) == 3
    assert not set(ev.names) & set(tr.names) and not set(va.names) & (set(ev.names) | set(tr.names))
    assert [p.name for p in ev.paths] == list(EVAL_FILES)
    assert len(resolve_dataset("builtin")) == len(ev) + len(va) + len(tr)
    for img in ev.images():
        assert img.ndim == 3 and min(img.shape[:2]) >= 256
        assert np.abs(img[..., 0].astype(int) - img[..., 2]).mean() > 5  # colour photos


@pytest.mark.parametrize(
    "name,match",
    [
        ("Set99", "unknown"),
        ("Urban100", "not found"),
        ("", "empty"),
        ("Set5+Nope", "Nope"),
    ],
)
def test_bad_names(tmp_path, name, match):
    _make_set(tmp_path, "Set5", 1)
    with pytest.raises(UserError, match=match):
        resolve_dataset(name, tmp_path)


def test_empty_folder_and_bad_file(tmp_path):
    (tmp_path / "Set14" / "HR").mkdir(parents=True)
    with pytest.raises(UserError, match="no images"):
        resolve_dataset("Set14", tmp_path)
    (tmp_path / "f.png").write_bytes(b"x")
    with pytest.raises(UserError, match="not a folder"):
        resolve_dataset(str(tmp_path / "f.png"))
    bad = tmp_path / "Bad" / "HR"
    bad.mkdir(parents=True)
    (bad / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = resolve_dataset(str(tmp_path / "Bad"))
    with pytest.raises(UserError, match="broken.png"):
        ds.image(0)


def test_holdout_split_is_fixed_and_disjoint(tmp_path):
    """NAME:val = images 9, 19, ... (1 in 10) of NAME in its order; NAME:train the rest; joins included."""
    _make_set(tmp_path, "A", 12)
    _make_set(tmp_path, "B", 11)
    val = resolve_dataset("A+B:val", tmp_path)
    train = resolve_dataset("A+B:train", tmp_path)
    full = resolve_dataset("A+B", tmp_path)
    assert val.paths == [full.paths[9], full.paths[19]]
    assert len(train) == 21 and not set(train.paths) & set(val.paths)
    assert sorted(train.paths + val.paths) == sorted(full.paths)
    _make_set(tmp_path, "C", 5)
    with pytest.raises(UserError, match="too few"):
        resolve_dataset("C:val", tmp_path)
