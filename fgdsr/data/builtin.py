"""The built-in data set: photos shipped inside the scikit-image wheel (no download), split deterministically.

`builtin-eval` holds 5 colour photos from flat to textured; `builtin-train` the rest (colour and gray).
Files are read straight from the installed `skimage/data` folder (never through `skimage.data.*()`,
which may try to fetch files that a wheel does not ship).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fgdsr.errors import UserError

# Fixed lists (not a random split) so every machine sees the same images in the same order.
EVAL_FILES = (
    "rocket.jpg",  # flat: sky, smooth gradients
    "coffee.png",  # flat-ish: cup, table
    "astronaut.png",  # mixed: face, suit, flag
    "chelsea.png",  # textured: cat fur
    "ihc.png",  # textured: stained tissue
)
TRAIN_FILES = (
    "motorcycle_left.png",
    "motorcycle_right.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "color.png",
    "camera.png",
    "brick.png",
    "grass.png",
    "gravel.png",
    "moon.png",
    "coins.png",
    "cell.png",
    "page.png",
    "text.png",
    "clock_motion.png",
)
# A fixed disjoint split of builtin-eval for `fgdsr pipeline`: the best trial is selected on builtin-val and the
# report scores builtin-test, so no reported image chose the model it scores (flat and textured in both).
VAL_FILES = ("coffee.png", "chelsea.png")
TEST_FILES = ("rocket.jpg", "astronaut.png", "ihc.png")
SPLITS = {"builtin-eval": EVAL_FILES, "builtin-train": TRAIN_FILES, "builtin": EVAL_FILES + TRAIN_FILES,
          "builtin-val": VAL_FILES, "builtin-test": TEST_FILES}  # fmt: skip


def skimage_data_dir() -> Path:
    """The installed `skimage/data` folder (found without importing scikit-image)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("dataset 'builtin': scikit-image is not installed; pip install scikit-image")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def builtin_paths(split: str) -> list[Path]:
    """Image files of `split` ('builtin', 'builtin-train', 'builtin-eval'); missing files are skipped."""
    if split not in SPLITS:
        raise UserError(f"dataset '{split}': unknown built-in split; use one of {', '.join(SPLITS)}")
    folder = skimage_data_dir()
    paths = [folder / f for f in SPLITS[split] if (folder / f).is_file()]
    if not paths:
        raise UserError(
            f"dataset '{split}': no scikit-image sample photos found in {folder}; reinstall scikit-image"
        )
    return paths
