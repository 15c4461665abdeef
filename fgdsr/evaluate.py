"""Evaluate upscalers over data sets x scales with the literature's protocol -> the `--json` schema.

    {"results": [{"dataset": "Set5", "scale": 4, "method": "bicubic", "psnr": 28.42, "ssim": 0.8104,
                  "images": [{"name": "baby", "size": [512, 512], "psnr": ..., "ssim": ..., "entropy": ...}]}]}

Per image: `size` is the evaluated (modcropped) HR [height, width]; `entropy` (bits) is that of the full
HR image's Y channel (independent of the scale). With a baseline, every entry of another method gains
`delta_psnr` (per image and the set mean): method PSNR minus baseline PSNR on the same image.
The protocol itself (LR making, Y, shave, PSNR/SSIM) is in fgdsr/metrics/protocol.py.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from fgdsr.data.datasets import Dataset, resolve_dataset
from fgdsr.data.imresize import modcrop
from fgdsr.errors import UserError
from fgdsr.metrics.entropy import entropy
from fgdsr.metrics.protocol import evaluate_pair, make_lr, y_channel

UpscalerFactory = Callable[[int], Callable[[np.ndarray], np.ndarray]]  # or an upscaler instance

_LR_CACHE: OrderedDict[tuple, np.ndarray] = OrderedDict()
_LR_CACHE_MAX = 2048  # LR images kept across calls (validation during training re-uses them)
_LR_LOCK = threading.Lock()


def lr_image(dataset: Dataset, i: int, scale: int, lr_uint8: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(modcropped HR (H, W, 3) uint8, its protocol LR), the LR cached per (file, scale, variant)."""
    hr = modcrop(dataset.image(i), scale)
    path = dataset.paths[i]
    key = (str(path), path.stat().st_mtime_ns, scale, lr_uint8)
    with _LR_LOCK:
        lr = _LR_CACHE.get(key)
        if lr is not None:
            _LR_CACHE.move_to_end(key)
            return hr, lr
    lr = make_lr(hr, scale, lr_uint8=lr_uint8)
    lr.setflags(write=False)
    with _LR_LOCK:
        _LR_CACHE[key] = lr
        while len(_LR_CACHE) > _LR_CACHE_MAX:
            _LR_CACHE.popitem(last=False)
    return hr, lr


def upscaler_for(method: str, obj, scale: int):
    """The upscaler of `obj` at `scale`: a ready upscaler instance (has an int `.scale`, used as is; its scale
    must match) or a factory such as `BicubicUpscaler` / `lambda s: ...` (called with the scale)."""
    if not isinstance(obj, type) and isinstance(getattr(obj, "scale", None), int):
        if obj.scale != scale:
            raise UserError(
                f"method '{method}': an x{obj.scale} upscaler cannot be evaluated at --scale {scale}"
            )
        return obj
    return obj(scale)


def check_scale(scale: object) -> int:
    """An integer >= 2, else `UserError` (accepts '4' and 4.0; rejects 1, 1.5, 'x4')."""
    try:
        f = float(str(scale).strip())
    except ValueError:
        raise UserError(f"--scale '{scale}': not a number; use an integer such as 2, 3 or 4") from None
    if not f.is_integer() or f < 2:
        raise UserError(f"--scale '{scale}': the scale must be an integer >= 2 (2, 3, 4, 8)")
    return int(f)


def evaluate(
    methods: dict[str, UpscalerFactory],
    datasets: Sequence[str | Dataset],
    scales: Iterable[int],
    data_root: str | Path | None = None,
    max_images: int | None = None,
    baseline: str | None = None,
    lr_uint8: bool = False,
    gray_as_y: bool = True,
    y_rounded: bool = True,
    on_image: Callable[[dict], None] | None = None,
) -> dict:
    """Run every method on every (data set, scale); returns `{"results": [...]}` (schema above).

    methods: name -> upscaler, or factory(scale) -> upscaler (`fgdsr.inference`; see `upscaler_for`); datasets: names, folders or
    `Dataset`s; max_images: first N images per set; baseline: a key of `methods` for `delta_psnr`;
    lr_uint8: round the LR to uint8 (protocol variant, see docs/BENCHMARKS.md); gray_as_y: single-channel
    files use their gray value as Y (reproduces the published Set14 row); y_rounded: False keeps the
    double Y of MATLAB's `rgb2ycbcr` (LapSRN's own evaluation script: `authors_protocol`); on_image: called with each
    image entry (plus dataset/scale/method) as it is computed.
    """
    if not methods:
        raise UserError("evaluate: no method given; use --method bicubic or --checkpoint PATH")
    if baseline is not None and baseline not in methods:
        raise UserError(f"evaluate: baseline '{baseline}' is not one of the methods {list(methods)}")
    scales = [check_scale(s) for s in scales]
    if not scales:
        raise UserError("evaluate: no scale given; use --scale 4")
    sets = [d if isinstance(d, Dataset) else resolve_dataset(d, data_root) for d in datasets]
    if not sets:
        raise UserError("evaluate: no data set given; use --dataset Set5")
    results = []
    for ds in sets:
        ds = ds.subset(max_images)
        names = ds.names
        entropies = [
            entropy(y_channel(ds.image(i), gray_as_y and ds.is_gray(i)).astype(np.uint8))
            for i in range(len(ds))
        ]
        for scale in scales:
            for method, factory in methods.items():
                upscaler = upscaler_for(method, factory, scale)
                images = []
                for i in range(len(ds)):
                    hr, lr = lr_image(ds, i, scale, lr_uint8)
                    if min(hr.shape[:2]) <= 2 * scale:
                        raise UserError(
                            f"{ds.paths[i]}: image {hr.shape[1]}x{hr.shape[0]} too small for x{scale}"
                        )
                    sr = np.asarray(upscaler(lr))
                    if sr.shape != hr.shape or sr.dtype != np.uint8:
                        raise ValueError(
                            f"method '{method}' returned {sr.shape} {sr.dtype} for {names[i]}, expected "
                            f"{hr.shape} uint8"
                        )
                    p, s = evaluate_pair(sr, hr, scale, gray=gray_as_y and ds.is_gray(i), y_rounded=y_rounded)
                    entry = {
                        "name": names[i],
                        "size": [int(hr.shape[0]), int(hr.shape[1])],
                        "psnr": p,
                        "ssim": s,
                        "entropy": entropies[i],
                    }
                    images.append(entry)
                    if on_image is not None:
                        on_image({"dataset": ds.name, "scale": scale, "method": method, **entry})
                results.append(
                    {
                        "dataset": ds.name,
                        "scale": scale,
                        "method": method,
                        "psnr": float(np.mean([e["psnr"] for e in images])),
                        "ssim": float(np.mean([e["ssim"] for e in images])),
                        "images": images,
                    }
                )
    out = {"results": results}
    if baseline is not None:
        base = {"results": [r for r in results if r["method"] == baseline]}
        attach_baseline(out, base, skip_method=baseline)
    return out


def attach_baseline(report: dict, baseline: dict, skip_method: str | None = None) -> dict:
    """Add `delta_psnr` (PSNR minus the baseline's, same data set, scale and image) to `report` in place.

    `baseline` is another `evaluate` result (e.g. a saved `--json` file); entries of `skip_method`
    and images absent from the baseline are left without a delta.
    """
    ref: dict[tuple, float] = {}
    for r in baseline.get("results", []):
        for e in r.get("images", []):
            ref[(r["dataset"], int(r["scale"]), e["name"])] = float(e["psnr"])
    for r in report["results"]:
        if r["method"] == skip_method:
            continue
        deltas = []
        for e in r["images"]:
            b = ref.get((r["dataset"], int(r["scale"]), e["name"]))
            if b is not None:
                e["delta_psnr"] = e["psnr"] - b
                deltas.append(e["delta_psnr"])
        if deltas:
            r["delta_psnr"] = float(np.mean(deltas))
    return report
