"""Training patches: random HR crops, LapSRN augmentation, the LR input and the per-level HR targets.

One sample (index i) is a pure function of (seed, i): the image, the random downscale U(0.5, 1.0), the
crop position, the flips and the 90-degree rotation all come from `np.random.default_rng([seed, i])`.
So batches are identical with 0 or N DataLoader workers, and a resumed run continues the same stream
(`make_train_loader(..., start_step=k)`).

Two data paths (`cfg.pyramid_on`), the same numbers up to float rounding (tests/test_sampler.py):
- loader: each sample is `(lr, targets)`, made per sample in the DataLoader (steps 1-4 below);
- device: each sample is the HR patch only (steps 1-3); `make_pyramid` makes the LR input and the targets
  for the whole batch on the training device (fgdsr/train.py), so the CPU workers only crop, apply the random
  downscale, flip and rotate. On CPU both paths give the same bits (measured; the test allows float rounding).

Per sample:
1. pick an image; draw s ~ U(0.5, 1.0) (random_downscale; else 1) and raise it to p / min(H, W) for
   images smaller than the patch (they are enlarged instead of skipped);
2. crop a window of about (p + 8) / s source pixels, convert it to Y (MATLAB BT.601, float, not rounded;
   linear, so converting before resizing equals converting after), resize it by s with the MATLAB
   bicubic (crop-then-resize equals resize-then-crop away from the window border; the 4 px margin on
   each side absorbs the border) and keep the central p x p patch;
3. random horizontal flip, vertical flip, and (augment: dihedral) rot90: the 8 dihedral transforms;
   augment: flip keeps the flips only (the FGD paper's augmentation);
4. targets: the HR patch downscaled by 2^k (MATLAB bicubic, float), coarsest first, last = the patch
   (scale 3: the patch only); LR: the patch downscaled by `scale`.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from fgdsr.config import TrainConfig
from fgdsr.data.color import OFFSET, T
from fgdsr.data.datasets import resolve_dataset
from fgdsr.data.imresize import imresize
from fgdsr.errors import UserError

MARGIN = 4  # output pixels kept on each side of the patch while resizing a crop, then dropped
VIRTUAL_LENGTH = 1 << 40  # samples are indexed, not enumerated: the stream is effectively endless
PRELOAD_MAX_IMAGES = 400  # decode up front up to this many images (see TrainPatches.__init__)
SCALE_STEP = 1.0 / 128  # random downscale factors are quantised so the bicubic tables can be cached


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread: a sample is many tiny ops, and on a busy machine a second
    OpenMP thread costs more in synchronisation than it saves (measured: 50x slower matmuls)."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def level_sizes(patch: int, scale: int) -> list[int]:
    """Target sides, coarsest first: x4 with p=128 -> [64, 128]; x8 -> [32, 64, 128]; x2 / x3 -> [p]."""
    if scale in (2, 4, 8):
        levels = int(math.log2(scale))
        return [patch // 2 ** (levels - 1 - k) for k in range(levels)]
    return [patch]


def make_pyramid(hr: torch.Tensor, scale: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """HR patches (N, C, p, p) -> (LR (N, C, p/s, p/s), targets coarse to fine, last = hr), MATLAB bicubic.

    Runs on hr's device and dtype, batched: the loader path calls it per sample, the device path per batch.
    On the CPU on one thread (see `one_thread`; measured on the shared 2-core machine: a batch of 64 HR 128
    patches took 8 ms on one thread, 87 ms on two).
    """
    p = hr.shape[-1]
    with one_thread() if hr.device.type == "cpu" else nullcontext():
        targets = [imresize(hr, size=(side, side)) for side in level_sizes(p, scale)[:-1]]
        targets.append(hr)
        lr = imresize(hr, size=(p // scale, p // scale))
    return lr, targets


def _largest_short_side(dataset, images: list[np.ndarray] | None) -> int:
    """max over images of min(H, W): decoded arrays when preloaded, else the file headers (no decoding)."""
    if images is not None:
        return max(min(img.shape[:2]) for img in images)
    from PIL import Image

    sides = []
    for path in dataset.paths:
        with Image.open(path) as img:
            sides.append(min(img.size))
    return max(sides)


class TrainPatches(TorchDataset):
    """Random HR patches of `cfg.train_dataset`: item i -> `(lr (C, p/s, p/s), targets: list[(C, h, w)])`,
    or the HR patch (C, p, p) alone when `hr_only` (make_train_loader sets it for cfg.pyramid_on == "device").

    Float32 in [0, 1] (bicubic overshoot not clipped); C = 1 (Y, MATLAB BT.601) or 3 (`color="rgb"`).
    `cfg` fields used: train_dataset, data_root, patch_size, scale, random_downscale, augment.
    """

    def __init__(
        self, cfg: TrainConfig, seed: int = 0, color: str = "y", dataset=None, hr_only: bool = False
    ) -> None:
        if color not in ("y", "rgb"):
            raise UserError(f"TrainPatches color: unknown '{color}' (y, rgb)")
        self.cfg = cfg
        self.seed = int(seed)
        self.color = color
        self.patch = int(cfg.patch_size)
        self.scale = int(cfg.scale)
        self.hr_only = bool(hr_only)
        self.rotate = cfg.augment == "dihedral"
        if self.patch % self.scale:
            raise UserError(
                f"config field 'patch_size': {self.patch} is not a multiple of scale {self.scale}"
            )
        self.dataset = dataset if dataset is not None else resolve_dataset(cfg.train_dataset, cfg.data_root)
        if len(self.dataset) == 0:
            raise UserError(f"dataset '{cfg.train_dataset}': no images to train on")
        # Small sets (T91 + BSD200: 291 images, ~100 MB) are decoded now, in the parent process: DataLoader
        # workers then share them (fork) and a corrupt file is reported before training starts. Large sets
        # (DIV2K: 800 images, ~7 GB decoded) are read on demand through the bounded image cache instead.
        self.preloaded = len(self.dataset) <= PRELOAD_MAX_IMAGES
        self.images = self.dataset.images() if self.preloaded else None
        # A patch larger than every image makes each sample an enlarged whole photo: seconds per sample at
        # patch 4096 on the built-in photos, and a model on 4096^2 patches, so a run that seems to hang.
        # Images smaller than the patch are enlarged (below) as long as one image holds a patch.
        largest = _largest_short_side(self.dataset, self.images)
        if self.patch > largest:
            fit = largest - largest % self.scale
            raise UserError(
                f"config field 'patch_size': {self.patch} px is larger than every image of '{cfg.train_dataset}' "
                f"(largest shorter side {largest} px); use patch_size <= {fit}"
            )

    def __len__(self) -> int:
        return VIRTUAL_LENGTH

    def _to_channels(self, crop: np.ndarray) -> torch.Tensor:
        """(h, w, 3) uint8 -> (1, C, h, w) float32 in [0, 1]: Y (MATLAB double formula) or RGB."""
        # astype copies: the cached image arrays are read-only
        x = torch.from_numpy(crop.astype(np.float32)).permute(2, 0, 1)[None]
        if self.color == "rgb":
            return x / 255.0
        w = torch.as_tensor(T[0] / (255.0 * 255.0), dtype=torch.float32).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True) + OFFSET[0] / 255.0

    def hr_patch(self, rng: np.random.Generator) -> torch.Tensor:
        """One augmented HR patch (C, p, p) float32."""
        p = self.patch
        i = int(rng.integers(len(self.dataset)))
        img = self.images[i] if self.preloaded else self.dataset.image(i)
        h, w = img.shape[:2]
        s = float(rng.uniform(0.5, 1.0)) if self.cfg.random_downscale else 1.0
        s = max(s, p / min(h, w))  # small images are enlarged up to the patch size
        if s < 1.0:  # rounding up keeps s >= p / min(h, w)
            s = min(1.0, math.ceil(s / SCALE_STEP) * SCALE_STEP)
        if s == 1.0:
            y0, x0 = int(rng.integers(h - p + 1)), int(rng.integers(w - p + 1))
            x = self._to_channels(img[y0 : y0 + p, x0 : x0 + p])
        else:
            ch = min(h, math.ceil((p + 2 * MARGIN) / s))
            cw = min(w, math.ceil((p + 2 * MARGIN) / s))
            y0, x0 = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
            x = self._to_channels(img[y0 : y0 + ch, x0 : x0 + cw])
            oh, ow = max(p, round(ch * s)), max(p, round(cw * s))
            x = imresize(x, size=(oh, ow))
            ty, tx = (oh - p) // 2, (ow - p) // 2
            x = x[:, :, ty : ty + p, tx : tx + p]
        x = x[0]
        if rng.random() < 0.5:
            x = torch.flip(x, dims=(2,))
        if rng.random() < 0.5:
            x = torch.flip(x, dims=(1,))
        if self.rotate:
            k = int(rng.integers(4))
            if k:
                x = torch.rot90(x, k, dims=(1, 2))
        return x.contiguous()

    def __getitem__(self, index: int) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        rng = np.random.default_rng([self.seed, int(index)])
        with one_thread():
            hr = self.hr_patch(rng)
            if self.hr_only:
                return hr
            lr, targets = make_pyramid(hr[None], self.scale)
        return lr[0], [t[0] for t in targets]


class _OffsetSampler(torch.utils.data.Sampler):
    """Indices start, start + 1, ... (endless): a resumed run continues the stream where it stopped."""

    def __init__(self, start: int) -> None:
        self.start = int(start)

    def __iter__(self) -> Iterator[int]:
        i = self.start
        while True:
            yield i
            i += 1

    def __len__(self) -> int:  # DataLoader asks; the stream is endless
        return VIRTUAL_LENGTH


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # many small ops per sample: threads only add contention
    # Ctrl-C reaches the whole process group: a worker that died of it would fail the batch in flight while
    # the trainer writes its preemption checkpoint (fgdsr/preemption.py). The trainer ends the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_train_loader(
    cfg: TrainConfig, seed: int | None = None, start_step: int = 0, pin_memory: bool = False, **kwargs
) -> DataLoader:
    """Endless DataLoader of `(lr (B, C, p/s, p/s), targets: list[(B, C, h, w)])` batches of cfg.batch_size;
    with pyramid_on: device, of HR patches (B, C, p, p) (then `make_pyramid` on the training device).

    `seed` defaults to cfg.seed; `start_step` skips that many batches (resume); `pin_memory` for a CUDA
    trainer (page-locked batches: asynchronous host-to-device copies). Extra kwargs go to
    `TrainPatches` (color=..., dataset=..., hr_only=...).
    """
    kwargs.setdefault("hr_only", cfg.pyramid_on == "device")
    ds = TrainPatches(cfg, cfg.seed if seed is None else seed, **kwargs)
    workers = int(cfg.workers)
    return DataLoader(
        ds,
        batch_size=cfg.batch_size,
        sampler=_OffsetSampler(start_step * cfg.batch_size),
        num_workers=workers,
        worker_init_fn=_worker_init if workers > 0 else None,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        pin_memory=pin_memory,
        drop_last=True,
    )


def infinite_batches(loader: DataLoader) -> Iterator[tuple[torch.Tensor, list[torch.Tensor]]]:
    """Yield batches forever (restarts the loader should it ever end)."""
    while True:
        yield from loader
