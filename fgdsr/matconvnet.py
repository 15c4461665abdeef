"""Import the authors' LapSRN models (MatConvNet DagNN `.mat`, phoenix104104/LapSRN) into the `official` layout.

The file is read with SciPy (`loadmat`: plain arrays and structs, nothing executed). `net.layers` is the DAG:
each layer has a name, a type (dagnn.Conv, dagnn.ConvTranspose, dagnn.ReLU, dagnn.Sum, loss layers), input
and output variable names, parameter names and a `block` with its sizes, pads, strides, upsample factors and
crops. The model is rebuilt from those blocks (the level count, depth, channels, kernel sizes, crops, biases and
leak are read, then checked against what `LapSRN(layout="official")` computes; nothing is assumed).

Tensor conventions (MatConvNet manual, vl_nnconv / vl_nnconvt):
- conv filters are (h, w, in, out); torch Conv2d wants (out, in, h, w)            -> transpose(3, 2, 0, 1)
- convt filters are (h, w, out, in) ("filter k is F(:,:,k,:)"); torch ConvTranspose2d wants (in, out, h, w)
                                                                                     -> transpose(3, 2, 0, 1)
- both are correlations (no kernel flip) and a convt is the adjoint of the conv, as in torch, so no flip;
- loadmat(squeeze_me=True) drops singleton dims (the input conv's (3,3,1,64) arrives as (3,3,64), a residual
  bias as a 0-d float64): tensors are reshaped to the block's declared `size` first.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fgdsr.errors import UserError

AUTHORS_URL = "https://github.com/phoenix104104/LapSRN (pretrained_models/LapSRN_x{2,4,8}.mat)"


@dataclass
class DagLayer:
    """One DagNN layer as stored in the file."""

    name: str
    type: str
    inputs: list[str]
    outputs: list[str]
    params: list[str]
    block: dict[str, Any]


@dataclass
class DagNN:
    """The parts of a MatConvNet DagNN this importer needs."""

    params: dict[str, np.ndarray]
    layers: list[DagLayer]

    def layer(self, name: str) -> DagLayer | None:
        return next((lay for lay in self.layers if lay.name == name), None)


def _strings(value: Any) -> list[str]:
    """A MATLAB cell of strings / a char array / empty -> list[str] (loadmat squeezes 1-element cells)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    arr = np.atleast_1d(np.asarray(value, dtype=object))
    return [str(v) for v in arr.ravel() if isinstance(v, str) and v]


def _block_dict(block: Any) -> dict[str, Any]:
    names = getattr(block, "_fieldnames", None) or []
    return {k: getattr(block, k) for k in names}


def read_dagnn(path: str | Path) -> DagNN:
    """Read a MatConvNet DagNN `.mat` saved with `net.saveobj()` (a struct `net` with params and layers)."""
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found; download the model from {AUTHORS_URL}")
    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except Exception as e:  # scipy raises ValueError/TypeError/OSError/MatReadError on garbage or truncation
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise UserError(
            f"{path}: not a readable MATLAB .mat file ({first}); the file may be truncated: download it again "
            f"from {AUTHORS_URL}"
        ) from e
    net = mat.get("net")
    fields = getattr(net, "_fieldnames", None) or []
    if net is None or "params" not in fields or "layers" not in fields:
        found = ", ".join(k for k in mat if not k.startswith("__")) or "nothing"
        raise UserError(
            f"{path}: not a MatConvNet DagNN (expected a struct 'net' with 'params' and 'layers', found {found}); "
            f"use the authors' LapSRN_x2/x4/x8.mat from {AUTHORS_URL}"
        )
    try:
        params = {
            str(p.name): np.asarray(p.value, dtype=np.float32) for p in np.atleast_1d(np.asarray(net.params))
        }
        layers = [
            DagLayer(
                name=str(lay.name),
                type=str(lay.type),
                inputs=_strings(lay.inputs),
                outputs=_strings(lay.outputs),
                params=_strings(lay.params),
                block=_block_dict(lay.block),
            )
            for lay in np.atleast_1d(np.asarray(net.layers))
        ]
    except (AttributeError, TypeError, ValueError) as e:
        raise UserError(
            f"{path}: a MatConvNet file with unreadable params/layers ({e}); download it again"
        ) from e
    return DagNN(params, layers)


def _ints(block: dict[str, Any], key: str, n: int) -> tuple[int, ...]:
    """A block field as n ints; a scalar applies to all (MatConvNet's convention for pad/crop/upsample)."""
    arr = np.atleast_1d(np.asarray(block.get(key, 0))).astype(int).ravel()
    if arr.size == 1:
        arr = np.repeat(arr, n)
    return tuple(int(v) for v in arr[:n])


class _Reader:
    """Checks a DagNN layer by layer against the official LapSRN graph; every mismatch is one UserError."""

    def __init__(self, net: DagNN, path: Path) -> None:
        self.net, self.path = net, path

    def fail(self, problem: str) -> UserError:
        return UserError(
            f"{self.path}: {problem}; only the authors' LapSRN_x2/x4/x8.mat are supported (MS-LapSRN and other "
            f"MatConvNet models are not), see {AUTHORS_URL}"
        )

    def layer(self, name: str, type_: str, inputs: list[str] | None) -> DagLayer:
        lay = self.net.layer(name)
        if lay is None:
            raise self.fail(f"layer '{name}' missing")
        if lay.type != type_:
            raise self.fail(f"layer '{name}' is {lay.type}, expected {type_}")
        if inputs is not None and lay.inputs != inputs:
            raise self.fail(f"layer '{name}' reads {lay.inputs}, expected {inputs}")
        return lay

    def relu(self, name: str, src: str) -> str:
        lay = self.layer(name, "dagnn.ReLU", [src])
        leak = float(np.asarray(lay.block.get("leak", 0.0)))
        if abs(leak - 0.2) > 1e-9:
            raise self.fail(f"layer '{name}' has leak {leak}, LapSRN uses LeakyReLU(0.2)")
        return lay.outputs[0]

    def tensor(self, lay: DagLayer, index: int, shape: tuple[int, ...]) -> np.ndarray:
        if len(lay.params) <= index:
            raise self.fail(f"layer '{lay.name}' lacks parameter #{index + 1}")
        name = lay.params[index]
        if name not in self.net.params:
            raise self.fail(f"parameter '{name}' of layer '{lay.name}' missing")
        value = self.net.params[name]
        if value.size != int(np.prod(shape)):
            raise self.fail(f"parameter '{name}' has {value.size} values, its layer declares {shape}")
        if not np.all(np.isfinite(value)):
            raise self.fail(f"parameter '{name}' holds NaN or Inf")
        return value.reshape(shape)  # re-inserts the singleton dims loadmat squeezed (order-preserving)

    def conv(self, name: str, src: str, cin: int, cout: int) -> tuple[np.ndarray, np.ndarray, str]:
        lay = self.layer(name, "dagnn.Conv", [src])
        size = _ints(lay.block, "size", 4)
        if size != (3, 3, cin, cout):
            raise self.fail(f"layer '{name}' has size {list(size)}, expected [3 3 {cin} {cout}]")
        if _ints(lay.block, "pad", 4) != (1, 1, 1, 1) or _ints(lay.block, "stride", 2) != (1, 1):
            raise self.fail(f"layer '{name}' has pad/stride other than 1/1")
        if "dilate" in lay.block and _ints(lay.block, "dilate", 2) != (1, 1):
            raise self.fail(f"layer '{name}' is dilated")
        if not int(np.asarray(lay.block.get("hasBias", 1))):
            raise self.fail(f"layer '{name}' has no bias; the official layout has one")
        return self.tensor(lay, 0, size), self.tensor(lay, 1, (cout,)), lay.outputs[0]

    def convt(self, name: str, src: str, size: tuple, crop: tuple, bias: bool) -> tuple[np.ndarray, Any, str]:
        lay = self.layer(name, "dagnn.ConvTranspose", [src])
        got = _ints(lay.block, "size", 4)
        if got != size:
            raise self.fail(f"layer '{name}' has size {list(got)}, the official layout has {list(size)}")
        if _ints(lay.block, "upsample", 2) != (2, 2):
            raise self.fail(
                f"layer '{name}' upsamples by {list(_ints(lay.block, 'upsample', 2))}, expected 2"
            )
        if _ints(lay.block, "crop", 4) != crop:
            raise self.fail(
                f"layer '{name}' crops {list(_ints(lay.block, 'crop', 4))}, expected {list(crop)}"
            )
        if int(np.asarray(lay.block.get("numGroups", 1))) != 1:
            raise self.fail(f"layer '{name}' uses filter groups")
        if bool(int(np.asarray(lay.block.get("hasBias", 1)))) != bias:
            raise self.fail(f"layer '{name}' hasBias={not bias}, the official layout has {bias}")
        b = self.tensor(lay, 1, (size[2],)) if bias else None
        return self.tensor(lay, 0, size), b, lay.outputs[0]


def _conv_weight(f: np.ndarray) -> np.ndarray:
    """MatConvNet conv (h, w, in, out) or convt (h, w, out, in) -> torch (out, in, h, w) / (in, out, h, w)."""
    return np.ascontiguousarray(f.transpose(3, 2, 0, 1))


def import_matconvnet(path: str | Path) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """Read an official LapSRN `.mat` -> (LapSRN state dict (torch tensors), TrainConfig, provenance).

    The state loads into `LapSRN(cfg.scale, cfg.depth, cfg.channels, layout="official")` with strict=True.
    """
    import torch

    from fgdsr.config import TrainConfig

    path = Path(path)
    net = read_dagnn(path)
    rd = _Reader(net, path)
    names = [lay.name for lay in net.layers]
    if any(re.match(r"x\d+SR_", n) for n in names) or "upconv_f" in net.params:
        # init_MSLapSRN_model.m: layers x{s}SR_level{l}_R{r}_conv{d}, weights shared across levels and scales
        raise UserError(
            f"{path}: this is an MS-LapSRN model (recursive blocks with weights shared across levels and scales); "
            f"only LapSRN_x2/x4/x8.mat are supported, see {AUTHORS_URL}"
        )
    level_ids = sorted({int(m.group(1)) for n in names if (m := re.match(r"level(\d+)_", n))})
    if not level_ids or level_ids != list(range(1, len(level_ids) + 1)):
        raise rd.fail(f"no LapSRN pyramid levels (layers named levelN_*) found among {len(names)} layers")
    levels = len(level_ids)
    if levels > 3:
        raise rd.fail(f"{levels} pyramid levels (x{2**levels}); LapSRN models are x2, x4 or x8")

    inp = rd.layer("input_conv", "dagnn.Conv", ["LR"])
    channels = _ints(inp.block, "size", 4)[3]
    f, b, var = rd.conv("input_conv", "LR", 1, channels)
    state: dict[str, np.ndarray] = {"input_conv.weight": _conv_weight(f), "input_conv.bias": b}
    var = rd.relu("input_relu", var)
    depths = []
    img = "LR"
    # The first (coarsest) pyramid level has the highest number: level L, L-1, ..., 1.
    for i, s in enumerate(range(levels, 0, -1)):
        pre = f"levels.{i}"
        depth = sum(1 for n in names if re.fullmatch(rf"level{s}_conv\d+", n))
        depths.append(depth)
        for d in range(1, depth + 1):
            f, b, var = rd.conv(f"level{s}_conv{d}", var, channels, channels)
            j = 2 * (d - 1)  # Sequential index: conv, LeakyReLU, conv, ...
            state[f"{pre}.convs.{j}.weight"], state[f"{pre}.convs.{j}.bias"] = _conv_weight(f), b
            var = rd.relu(f"level{s}_relu{d}", var)
        f, b, var = rd.convt(f"level{s}_upconv", var, (3, 3, channels, channels), (0, 1, 0, 1), bias=True)
        state[f"{pre}.upconv.weight"], state[f"{pre}.upconv.bias"] = _conv_weight(f), b
        var = rd.relu(f"level{s}_uprelu", var)
        f, b, res = rd.conv(f"level{s}_residual", var, channels, 1)
        state[f"{pre}.residual.weight"], state[f"{pre}.residual.bias"] = _conv_weight(f), b
        f, _, up = rd.convt(f"level{s}_img_up", img, (4, 4, 1, 1), (1, 1, 1, 1), bias=False)
        state[f"{pre}.img_up.weight"] = _conv_weight(f)
        out = rd.layer(f"level{s}_output", "dagnn.Sum", None)
        if sorted(out.inputs) != sorted([up, res]):
            raise rd.fail(f"layer 'level{s}_output' does not add the image branch and the residual")
        img = out.outputs[0]
    if len(set(depths)) != 1 or depths[0] < 1:
        raise rd.fail(f"levels have different depths {depths}")
    scale = 2**levels
    cfg = TrainConfig().replace(
        model="lapsrn", layout="official", scale=scale, depth=depths[0], channels=channels, loss="l1"
    )
    data = path.read_bytes()
    provenance = {
        "source": path.name,
        "source_sha256": hashlib.sha256(data).hexdigest(),
        "source_bytes": len(data),
        "format": "MatConvNet DagNN (.mat), converted by fgdsr.matconvnet",
        "origin": AUTHORS_URL,
        "levels": levels,
        "depth": depths[0],
        "channels": channels,
        "converted_params": len(state),
    }
    tensors = {k: torch.from_numpy(np.asarray(v, dtype=np.float32).copy()) for k, v in state.items()}
    return tensors, cfg, provenance


def import_weights(path: str | Path, out_dir: str | Path) -> Path:
    """Convert an official LapSRN `.mat` and write an fgdsr checkpoint directory at `out_dir` (atomically)."""
    from fgdsr.checkpoint import save_model_checkpoint
    from fgdsr.models import build_model

    state, cfg, provenance = import_matconvnet(path)
    model = build_model(cfg)
    model.trunk.load_state_dict(state, strict=True)  # the reader already checked every shape
    meta = {"provenance": provenance, "source_sha256": provenance["source_sha256"], "step": 0, "metrics": {}}
    return save_model_checkpoint(out_dir, model, cfg, meta)
