"""Data sets by name or folder: `Set5`, `T91+BSD200`, `builtin-eval`, `/path/to/photos`.

Resolution of a name (first match wins):
- `NAME:train` / `NAME:val`: a fixed hold-out split of any set below (joins included): every HOLDOUT_EVERY-th
  image (index % 10 == 9, in the set's order) is `:val`, the rest `:train`; disjoint by construction, so a
  validation set for checkpoint / trial selection can come from the training pool instead of a test set
  (`train_dataset: T91+BSD200:train`, `val_dataset: T91+BSD200:val`);
- `A+B[+C]`: the images of each part, in order;
- `builtin`, `builtin-train`, `builtin-eval`: scikit-image's sample photos (fgdsr/data/builtin.py);
- a known name (Set5, Set14, BSD100, Urban100, T91, BSD200, DIV2K; case-insensitive) under the data root:
  `<root>/<Name>/HR`, else `<root>/<Name>` (DIV2K also `DIV2K/DIV2K_train_HR`);
- any other folder `<root>/<name>` (its `HR/` subfolder when present);
- an existing folder path (its `HR/` subfolder when present).
The data root is the `data_root` argument, else env `FGDSR_DATA_ROOT`, else `./datasets`.

Images come out as (H, W, 3) uint8, decoded once and kept in a process-wide cache bounded by
`FGDSR_IMAGE_CACHE_MB` (default 4096 MB; least recently used images are dropped beyond it).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from fgdsr.data.builtin import SPLITS, builtin_paths
from fgdsr.data.io import IMAGE_SUFFIXES, list_images, read_image
from fgdsr.errors import UserError

HOLDOUT_EVERY = 10  # `NAME:val` holds images 9, 19, 29, ... of NAME (10 %); `NAME:train` the others
KNOWN = ("Set5", "Set14", "BSD100", "Urban100", "T91", "BSD200", "DIV2K")
# Sub-folders tried under <root>/<Name>, in order.
HR_FOLDERS = {"DIV2K": ("HR", "DIV2K_train_HR")}


def default_data_root() -> Path:
    """env FGDSR_DATA_ROOT, else ./datasets."""
    env = os.environ.get("FGDSR_DATA_ROOT")
    return Path(env) if env else Path("datasets")


class _ImageCache:
    """Decoded images by (path, mtime, size), LRU-bounded in bytes; thread-safe."""

    def __init__(self) -> None:
        self._items: OrderedDict[tuple, tuple[np.ndarray, bool]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, path: Path) -> tuple[np.ndarray, bool]:
        st = path.stat() if path.exists() else None
        key = (str(path), st.st_mtime_ns if st else 0, st.st_size if st else 0)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        arr = read_image(path)
        arr.setflags(write=False)  # shared between callers: nobody may modify it in place
        item = (arr, _source_is_gray(path))
        budget = int(float(os.environ.get("FGDSR_IMAGE_CACHE_MB", "4096")) * 2**20)
        with self._lock:
            if key not in self._items:
                self._items[key] = item
                self._bytes += arr.nbytes
            while self._bytes > budget and len(self._items) > 1:
                _, (old, _) = self._items.popitem(last=False)
                self._bytes -= old.nbytes
        return item

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


IMAGE_CACHE = _ImageCache()


def _source_is_gray(path: Path) -> bool:
    """True when the file itself has one colour channel (L, I;16, 1, LA, ...): the protocol's Y is then
    the gray value (see fgdsr/metrics/protocol.py). Reads the header only."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.mode in ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
    except Exception:  # read_image has already reported unreadable files
        return False


class Dataset:
    """A named, ordered list of HR image files; `images()` are (H, W, 3) uint8, decoded once (cached)."""

    def __init__(self, name: str, paths: list[Path], names: list[str] | None = None) -> None:
        self.name = name
        self.paths = list(paths)
        self._names = list(names) if names is not None else _unique_names(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, {len(self.paths)} images)"

    @property
    def names(self) -> list[str]:
        """Image names: file stems (prefixed with the set's folder when a join has duplicate stems)."""
        return list(self._names)

    def image(self, i: int) -> np.ndarray:
        """Image i as read-only (H, W, 3) uint8 (copy before modifying)."""
        return IMAGE_CACHE.get(self.paths[i])[0]

    def is_gray(self, i: int) -> bool:
        """True when image i's file has a single channel (its 3 returned channels are equal)."""
        return IMAGE_CACHE.get(self.paths[i])[1]

    def images(self) -> list[np.ndarray]:
        """All images (decodes on first use)."""
        return [self.image(i) for i in range(len(self))]

    def __getitem__(self, i: int) -> tuple[str, np.ndarray]:
        return self.names[i], self.image(i)

    def subset(self, n: int | None) -> Dataset:
        """The first `n` images (all when None)."""
        return self if n is None else Dataset(self.name, self.paths[: max(0, n)], self._names[: max(0, n)])


def _unique_names(paths: list[Path]) -> list[str]:
    stems = [p.stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    return [f"{p.parent.parent.name if p.parent.name == 'HR' else p.parent.name}/{p.stem}" for p in paths]


def _folder_images(folder: Path, label: str) -> list[Path]:
    try:
        paths = list_images(folder)
    except OSError as e:
        raise UserError(f"dataset '{label}': cannot list {folder} ({e.strerror}); check permissions") from e
    if not paths:
        raise UserError(
            f"dataset '{label}': no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}; put the HR images there"
        )
    return paths


def _hr_folder(base: Path, subs: tuple[str, ...] = ("HR",)) -> Path:
    for sub in subs:
        if (base / sub).is_dir():
            return base / sub
    return base


def resolve_dataset(name: str, data_root: str | Path | None = None) -> Dataset:
    """A `Dataset` for a name, an `A+B` join or a folder path; `UserError` when it cannot be found."""
    name = str(name).strip()
    if not name:
        raise UserError("dataset: empty name; use Set5, T91+BSD200, builtin-eval or a folder path")
    if name.endswith((":train", ":val")) and not Path(name).exists():
        base_name, split = name.rsplit(":", 1)
        full = resolve_dataset(base_name, data_root)
        keep = [i for i in range(len(full)) if (i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1) == (split == "val")]
        if not keep:
            raise UserError(
                f"dataset '{name}': '{base_name}' has {len(full)} images, too few for a 1-in-{HOLDOUT_EVERY} "
                "hold-out split; name a larger set or a separate validation set"
            )
        return Dataset(name, [full.paths[i] for i in keep], [full.names[i] for i in keep])
    if "+" in name and not Path(name).exists():
        parts = [resolve_dataset(part, data_root) for part in name.split("+")]
        return Dataset(name, [p for d in parts for p in d.paths])
    if name in SPLITS:
        return Dataset(name, builtin_paths(name))
    root = Path(data_root) if data_root is not None else default_data_root()
    known = {k.lower(): k for k in KNOWN}
    if name.lower() in known:
        canon = known[name.lower()]
        base = next((root / n for n in (canon, name) if (root / n).is_dir()), None)
        if base is None:
            raise UserError(
                f"dataset '{name}': folder {root / canon} not found; put its images in {root / canon}/HR "
                "or point --data-root / FGDSR_DATA_ROOT at the folder that holds it"
            )
        return Dataset(canon, _folder_images(_hr_folder(base, HR_FOLDERS.get(canon, ("HR",))), name))
    if not Path(name).is_absolute() and (root / name).is_dir():  # any other set stored under the root
        return Dataset(name, _folder_images(_hr_folder(root / name), name))
    path = Path(name).expanduser()
    if path.is_dir():
        folder = _hr_folder(path)
        label = path.name if path.name != "HR" else path.parent.name
        return Dataset(label or str(path), _folder_images(folder, name))
    if path.exists():
        raise UserError(f"dataset '{name}': is a file, not a folder of images; give the folder that holds it")
    raise UserError(
        f"dataset '{name}': unknown (known: {', '.join(KNOWN)}, {', '.join(SPLITS)}, A+B joins, NAME:train / "
        f"NAME:val hold-out splits) and not a folder; check the name or --data-root (now {root})"
    )
