"""ONNX export of an SRModel (torch.onnx, dynamo): dynamic or one static shape, one file, ORT parity, sidecar.

Graph: input `lr` (N, 1, h, w) float32 in [0, 1] (the LR Y channel) -> output `sr` (N, 1, h*s, w*s) float32.
For FD/CS the Class-Module, the K-bin head, argmax, gather and the bounded offset are inside the graph.
With `rgb`: input `lr` (N, 3, h, w) RGB in [0, 1] -> `sr` (N, 3, h*s, w*s) RGB, colour in the graph
(trt/rgb_graph.py; the same I/O names, the sidecar's `io` says "rgb"). With `static_shape`: every input dim fixed (the tile graphs of `fgdsr upscale`).
FP16 export converts weights and compute to float16 with float32 I/O (casts in the graph): TensorRT 11 networks
are strongly typed, so the precision has to be in the ONNX graph, not in a builder flag.
Opsets: the dynamo exporter implements opset 18 and up; a lower request is converted by onnx's version converter,
which fails for these models and leaves opset 18 in the file without an error, so anything below 18 is refused
and the written opset is checked against the requested one.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fgdsr.errors import UserError
from trt.sidecar import sha256_path, write_sidecar

INPUT_NAME = "lr"
OUTPUT_NAME = "sr"
PRECISIONS = ("fp32", "fp16")
# Two LR sizes for the ORT parity check: odd, non-square, not multiples of the Class-Module's 32-pixel patch,
# different from the trace size, so a shape frozen at export time shows up as an error.
PARITY_SIZES = ((37, 29), (52, 64))
TRACE_SIZE = (40, 48)  # (h, w) of the example input
FP32_TOL = 1e-4  # max abs error on [0, 1] images (issue 5)
# FD/CS pick a bin by argmax: where two logits tie to float rounding, torch and ORT (different summation
# orders) may pick neighbouring bins and that pixel moves by up to an area width. Such ties are legitimate;
# a wrongly exported op moves far more pixels. So fp32 parity fails only when more than this share of pixels
# is off by >= FP32_TOL (the count is reported in the sidecar either way).
FP32_TIE_SHARE = 1e-4
OPSET_MIN = 18  # the exporter's own op implementations start here (torch.onnx TORCHLIB_OPSET)
OPSET_DEFAULT = 20  # torch.onnx's default opset


def require_onnx() -> None:
    """One-line error naming the extra when onnx/onnxruntime are missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UserError("onnx/onnxruntime are not installed; pip install 'fgdsr[onnx]'") from None


def _fp16_wrapper(model):
    """FP16 weights and compute, FP32 input and output (the casts become ONNX Cast nodes)."""
    import torch

    class Fp16IO(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner.half()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x.half()).float()

    return Fp16IO(model)


def symbolic_input_dims(path: str | Path) -> list[str | int]:
    """The input's dims as written in the ONNX file: a name for a symbolic dim, an int for a static one."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return [d.dim_param if d.dim_param else int(d.dim_value) for d in dims]


def check_symbolic(path: str | Path) -> list[str | int]:
    """Raise when batch, height or width is static: the exporter can fall back to static shapes silently."""
    dims = symbolic_input_dims(path)
    static = [axis for axis in (0, 2, 3) if axis >= len(dims) or not isinstance(dims[axis], str)]
    if len(dims) != 4 or static:
        raise UserError(f"{path}: exported input dims {dims} are not symbolic on axes {static}; the exporter "
                        "specialised the shape (a shape-dependent Python branch in the model?); fix the model code")  # fmt: skip
    return dims


def ort_session(path: str | Path, threads: int | None = None, providers: list[str] | None = None):
    """An onnxruntime InferenceSession; a corrupt file is a one-line UserError."""
    require_onnx()
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(
            str(path), sess_options=opts, providers=providers or ["CPUExecutionProvider"]
        )
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/… types
        first = " ".join(str(e).split())[:200]
        raise UserError(
            f"{path}: not a loadable ONNX model ({first}); re-export it with fgdsr export"
        ) from None


def bin_agreement(a, b, bins: int) -> float:
    """Fraction of pixels whose values fall in the same of K equal bins over [0, 1] (the argmax proxy);
    a non-finite value (an fp16 overflow) agrees with nothing."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    ka = np.clip((np.where(ok, a, 0.0) * bins).astype(np.int64), 0, bins - 1)
    kb = np.clip((np.where(ok, b, 0.0) * bins).astype(np.int64), 0, bins - 1)
    return float(((ka == kb) & ok).mean())


def parity(model, onnx_path: str | Path, shapes, bins: int = 32, seed: int = 0) -> list[dict]:
    """Compare the FP32 torch `model` with ONNX Runtime on random inputs in [0, 1] of the NCHW `shapes`.

    Returns one dict per shape: lr_hw, max_abs_err, mean_abs_err, pixels_over_tol, pixels, bin_agreement (share
    of pixels in the same of K bins). Random uniform images are the hard case for FD (many near-tied logits).
    """
    import numpy as np
    import torch

    sess = ort_session(onnx_path)
    inp, outp = sess.get_inputs()[0].name, sess.get_outputs()[0].name
    gen = torch.Generator().manual_seed(seed)
    out = []
    for shape in shapes:
        x = torch.rand(*shape, generator=gen)
        with torch.no_grad():
            ref = model(x).float().numpy()
        got = sess.run([outp], {inp: x.numpy()})[0]
        h, w = shape[2:]
        if got.shape != ref.shape:
            raise UserError(f"{onnx_path}: ONNX output shape {got.shape} != torch {ref.shape} at LR {h}x{w}; "
                            "the export froze a shape; fix the model code")  # fmt: skip
        err = np.abs(got.astype(np.float64) - ref)
        out.append({"lr_hw": [h, w], "max_abs_err": float(err.max()), "mean_abs_err": float(err.mean()),
                    "pixels_over_tol": int((err >= FP32_TOL).sum()), "pixels": int(err.size),
                    "bin_agreement": bin_agreement(got, ref, bins)})  # fmt: skip
    return out


def _quiet_export(fn):
    """Run the exporter without its progress prints and torchvision warnings (the CLI prints its own lines)."""
    for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return fn()


@dataclass(frozen=True)
class ExportOptions:
    """What to export. precision: fp32 | fp16 (FP16 weights/compute, FP32 I/O); opset: None = OPSET_DEFAULT;
    static_shape: (N, C, h, w) for a graph of that one input shape (tile runners, TensorRT min = opt = max),
    None for dynamic batch/height/width; rgb: the image-in/image-out graph (trt/rgb_graph.py) instead of Y;
    check: compare with torch on ONNX Runtime (refused above FP32_TOL at fp32); source/source_sha256: what the
    model came from, for the sidecar."""

    precision: str = "fp32"
    opset: int | None = None
    static_shape: tuple[int, int, int, int] | None = None
    rgb: bool = False
    check: bool = True
    source: str = ""
    source_sha256: str = ""


def check_opset(opset: int | None) -> int:
    """The opset to export: None -> OPSET_DEFAULT; outside what the exporter can produce -> one-line UserError."""
    if opset is None:
        return OPSET_DEFAULT
    hi = max_opset()
    if not OPSET_MIN <= int(opset) <= hi:
        raise UserError(f"--opset {opset}: the exporter (torch.onnx, dynamo) writes opsets {OPSET_MIN}..{hi} "
                        f"only (a lower request is silently kept at {OPSET_MIN}); pass --opset in that range "
                        f"or leave it out (default {OPSET_DEFAULT})")  # fmt: skip
    return int(opset)


def max_opset() -> int:
    """The highest opset the installed onnx package defines (the exporter and checker accept it)."""
    import onnx

    return int(onnx.defs.onnx_opset_version())


def _graph_module(model, cfg, opts: ExportOptions):
    """(the module to export, its FP32 torch reference for the parity check)."""
    graph = _fp16_wrapper(_clone(model)) if opts.precision == "fp16" else model
    if not opts.rgb:
        return graph, model
    from trt.rgb_graph import RgbSR

    scale = int(cfg.scale)
    return RgbSR(graph, scale).eval(), RgbSR(model, scale).eval()


def _run_exporter(graph, tmp: Path, opts: ExportOptions, opset: int) -> None:
    """torch.onnx.export (dynamo) of `graph` to `tmp`: one static shape or dynamic batch/height/width."""
    import torch

    channels = 3 if opts.rgb else 1
    if opts.static_shape is not None:
        example, dynamic = torch.rand(*opts.static_shape), None
    else:
        batch = torch.export.Dim("batch", min=1, max=1024)
        height = torch.export.Dim("height", min=8, max=8192)
        width = torch.export.Dim("width", min=8, max=8192)
        example, dynamic = torch.rand(2, channels, *TRACE_SIZE), ({0: batch, 2: height, 3: width},)
    try:
        _quiet_export(lambda: torch.onnx.export(
            graph, (example,), str(tmp), dynamo=True, external_data=False, opset_version=opset,
            dynamic_shapes=dynamic, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME]))  # fmt: skip
    except Exception as e:
        first = " ".join(str(e).split())[:240]
        raise UserError(f"export: torch.onnx failed ({type(e).__name__}: {first}); "
                        "check the model's forward for data-dependent Python control flow") from None  # fmt: skip


def _check_graph(tmp: Path, reference, cfg, opts: ExportOptions, opset: int) -> tuple[list, list]:
    """Dims, checker, written opset, ORT parity of the exported file; -> (input dims, parity checks)."""
    import onnx

    if opts.static_shape is not None:
        dims = symbolic_input_dims(tmp)
        if dims != list(opts.static_shape):
            raise UserError(
                f"export: input dims {dims} are not the requested static shape {list(opts.static_shape)}"
            )
    else:
        dims = check_symbolic(tmp)
    onnx.checker.check_model(str(tmp))
    written = next(o.version for o in onnx.load(str(tmp), load_external_data=False).opset_import
                   if o.domain in ("", "ai.onnx"))  # fmt: skip
    if written != opset:  # the exporter keeps its own opset when a version conversion fails
        raise UserError(f"--opset {opset}: the exporter wrote opset {written} instead; pass --opset {written} "
                        f"(supported {OPSET_MIN}..{max_opset()})")  # fmt: skip
    if not opts.check:
        return dims, []
    channels = 3 if opts.rgb else 1
    shapes = (
        [tuple(opts.static_shape)] if opts.static_shape else [(2, channels, h, w) for h, w in PARITY_SIZES]
    )
    checks = parity(reference, tmp, shapes, bins=int(getattr(cfg, "bins", 32)))
    if opts.precision == "fp32":
        bad = [c for c in checks if c["pixels_over_tol"] > FP32_TIE_SHARE * c["pixels"]]
        if bad:
            c = bad[0]
            raise UserError(f"export: ONNX Runtime differs from torch by up to {c['max_abs_err']:.2e} on "
                            f"{c['pixels_over_tol']} of {c['pixels']} pixels (>= {FP32_TOL:g}) at LR "
                            f"{c['lr_hw'][0]}x{c['lr_hw'][1]}, bin agreement {c['bin_agreement']:.4f}; "
                            "an op is exported wrongly; report it with the model config")  # fmt: skip
    return dims, checks


def export_onnx(
    model, out: str | Path, cfg: Any, options: ExportOptions | None = None, **fields
) -> dict[str, Any]:
    """Export `model` (an SRModel, FP32, any device) to the single file `out`; write `out`.json; return it.

    cfg: the TrainConfig the model was built from (scale, loss=variant, bins; stored in the sidecar so the
    benchmark can count params/Mult-Adds of an .onnx and check its scale). options: an ExportOptions, or its
    fields as keywords (precision=..., source_sha256=...). Raises UserError on a bad option, dims that are not
    what was asked, a wrong opset or failed parity; `out` is then untouched.
    """
    opts = options if options is not None else ExportOptions(**fields)
    require_onnx()
    if opts.precision not in PRECISIONS:
        raise UserError(f"--precision: '{opts.precision}' is not one of {', '.join(PRECISIONS)}")
    opset = check_opset(opts.opset)
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise UserError(f"--out: '{out}' must end in .onnx")
    model = model.float().cpu().eval()
    graph, reference = _graph_module(model, cfg, opts)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}.onnx")
    try:
        _run_exporter(graph, tmp, opts, opset)
        dims, checks = _check_graph(tmp, reference, cfg, opts, opset)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    sidecar = _sidecar(out, cfg, opts, {"opset": opset, "input_dims": dims, "checks": checks})
    write_sidecar(out, "onnx", sidecar)
    return sidecar


def _sidecar(out: Path, cfg, opts: ExportOptions, graph: dict[str, Any]) -> dict[str, Any]:
    import onnx
    import torch

    import fgdsr

    cfg_dict = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg or {})
    return {
        "fgdsr_version": fgdsr.__version__,
        "source": str(opts.source),
        "source_sha256": opts.source_sha256,
        "onnx_sha256": sha256_path(out),
        "scale": int(cfg_dict.get("scale", 4)),
        "variant": str(cfg_dict.get("loss", "l1")),
        "opset": int(graph["opset"]),
        "io": "rgb" if opts.rgb else "y",
        "input_names": [INPUT_NAME],
        "output_names": [OUTPUT_NAME],
        "input_dims": graph["input_dims"],
        "static": opts.static_shape is not None,
        "precision": opts.precision,
        "io_dtype": "float32",
        "parity": {
            "reference": "torch fp32",
            "runtime": "onnxruntime CPU",
            "checks": graph["checks"],
            "tolerance": FP32_TOL if opts.precision == "fp32" else None,
        },
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
        "config": cfg_dict,
    }


def _clone(model):
    import copy

    return copy.deepcopy(model)


def export_source(source, out: str | Path, options: ExportOptions | None = None, **fields) -> dict[str, Any]:
    """Export a resolved `trt.sources.Source` of kind 'checkpoint' (a checkpoint dir or an MLflow run's).

    options / fields: as for `export_onnx` (source and source_sha256 are filled in from `source`)."""
    if source.kind != "checkpoint":
        raise UserError(f"export: '{source.label}' is already an {source.kind} file; export takes a checkpoint "
                        "or an MLflow run id")  # fmt: skip
    from fgdsr.checkpoint import load_model

    opts = options if options is not None else ExportOptions(**fields)
    check_opset(opts.opset)  # before loading the model: a bad opset is refused at once
    model, cfg, _meta = load_model(source.path)
    opts = replace(opts, source=source.label, source_sha256=sha256_path(source.path))
    return export_onnx(model, out, cfg, opts)
