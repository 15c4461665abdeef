"""`fgdsr evaluate`: PSNR/SSIM/entropy tables with the literature's protocol (bicubic or checkpoints).

Nothing heavy is imported at module level (the CLI must start fast): torch, numpy and matplotlib are
imported inside the functions.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import typer

from fgdsr.atomic import save_figure_atomic, write_text_atomic
from fgdsr.errors import UserError


def _safe(name: str) -> str:
    """A file-name-safe version of a data set / method name."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_") or "x"


def _json_ready(obj):
    """inf/nan (identical images) -> null so stdout is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_ready(v) for v in obj]
    return obj


def _checkpoint_method(path: str, device: str, scales: list[int] | None):
    """(name, factory, model scale) for a checkpoint folder; name = the folder name."""
    from fgdsr.checkpoint import load_model
    from fgdsr.inference import ModelUpscaler

    p = Path(path)
    if not p.exists():
        raise UserError(f"--checkpoint {path}: not found; give a checkpoint folder written by 'fgdsr train'")
    model, cfg, _meta = load_model(p)
    name = (p if p.is_dir() else p.parent).resolve().name
    model_scale = int(cfg.scale)
    if scales is not None and any(s != model_scale for s in scales):
        raise UserError(
            f"--checkpoint {path}: a x{model_scale} model; evaluate it with --scale {model_scale}"
        )

    def factory(scale: int, _model=model, _device=device):
        return ModelUpscaler(_model, scale, _device)

    return name, factory, model_scale


def _deployed_method(path: str, option: str, scales: list[int] | None):
    """(name, upscaler, model scale) for an exported .onnx or a TensorRT engine; name = the file's name."""
    from fgdsr.inference import RgbRunnerUpscaler, RunnerUpscaler
    from trt.sources import ENGINE_SUFFIXES
    from trt.tile_runner import open_file_runner

    p = Path(path)
    want = ENGINE_SUFFIXES if option == "--engine" else (".onnx",)
    if p.suffix.lower() not in want:
        raise UserError(f"{option} {path}: expected a file ending in {' or '.join(want)}")
    runner, meta = open_file_runner(p)
    model_scale = int(meta["scale"])
    if scales is not None and any(s != model_scale for s in scales):
        raise UserError(f"{option} {path}: a x{model_scale} model; evaluate it with --scale {model_scale}")
    cls = RgbRunnerUpscaler if meta.get("io") == "rgb" else RunnerUpscaler
    return p.name, cls(runner, model_scale), model_scale


def check_out_folder(out: Path | None) -> None:
    """--out must be a folder or not exist yet: refused before any work, so nothing is half-written."""
    if out is not None and out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder; give a folder (it is created if missing)")


def _print_tables(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for r in report["results"]:
        has_delta = any("delta_psnr" in e for e in r["images"])
        table = Table(title=f"{r['dataset']}  x{r['scale']}  {r['method']}", title_justify="left")
        table.add_column("image")
        table.add_column("size", justify="right")
        table.add_column("entropy", justify="right")
        table.add_column("PSNR", justify="right")
        table.add_column("SSIM", justify="right")
        if has_delta:
            table.add_column("ΔPSNR", justify="right")
        for e in r["images"]:
            row = [e["name"], f"{e['size'][1]}x{e['size'][0]}", f"{e['entropy']:.3f}", f"{e['psnr']:.2f}"]
            row.append(f"{e['ssim']:.4f}")
            if has_delta:
                row.append(f"{e['delta_psnr']:+.3f}" if "delta_psnr" in e else "")
            table.add_row(*row)
        mean = ["mean", "", "", f"{r['psnr']:.2f}", f"{r['ssim']:.4f}"]
        if has_delta:
            mean.append(f"{r['delta_psnr']:+.3f}" if "delta_psnr" in r else "")
        table.add_section()
        table.add_row(*mean, style="bold")
        console.print(table)


def write_outputs(report: dict, out: Path) -> list[Path]:
    """CSV per (data set, scale, method), entropy-vs-PSNR scatter per (data set, scale), and with deltas
    an entropy-vs-ΔPSNR plot with a least-squares line; plus results.json. Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in report["results"]:
        groups.setdefault((r["dataset"], r["scale"]), []).append(r)
        has_delta = any("delta_psnr" in e for e in r["images"])
        lines = ["name,height,width,entropy,psnr,ssim" + (",delta_psnr" if has_delta else "")]
        for e in r["images"]:
            cells = [e["name"], str(e["size"][0]), str(e["size"][1]), f"{e['entropy']:.6f}"]
            cells += [f"{e['psnr']:.6f}", f"{e['ssim']:.6f}"]
            if has_delta:
                cells.append(f"{e['delta_psnr']:.6f}" if "delta_psnr" in e else "")
            lines.append(",".join(f'"{c}"' if "," in c else c for c in cells))
        path = out / f"{_safe(r['dataset'])}_x{r['scale']}_{_safe(r['method'])}.csv"
        write_text_atomic(path, "\n".join(lines) + "\n")
        written.append(path)

    def save(fig, path: Path) -> None:
        written.append(save_figure_atomic(fig, path, dpi=120, bbox_inches="tight"))

    for (dataset, scale), rs in groups.items():
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for r in rs:
            ax.scatter(
                [e["entropy"] for e in r["images"]], [e["psnr"] for e in r["images"]], label=r["method"], s=18
            )
        ax.set_xlabel("HR entropy (bits)")
        ax.set_ylabel("PSNR (dB, Y)")
        ax.set_title(f"{dataset} x{scale}")
        ax.legend()
        ax.grid(alpha=0.3)
        save(fig, out / f"{_safe(dataset)}_x{scale}_entropy_psnr.png")
        with_delta = [r for r in rs if any("delta_psnr" in e for e in r["images"])]
        if with_delta:
            fig, ax = plt.subplots(figsize=(5.5, 4))
            for r in with_delta:
                pts = [(e["entropy"], e["delta_psnr"]) for e in r["images"] if "delta_psnr" in e]
                x, y = np.array(pts).T
                sc = ax.scatter(x, y, s=18, label=r["method"])
                if len(x) >= 2 and np.ptp(x) > 0:
                    slope, icpt = np.polyfit(x, y, 1)
                    xs = np.linspace(x.min(), x.max(), 2)
                    ax.plot(
                        xs, slope * xs + icpt, color=sc.get_facecolor()[0], label=f"fit: {slope:+.3g} dB/bit"
                    )
            ax.axhline(0.0, color="gray", lw=0.8)
            ax.set_xlabel("HR entropy (bits)")
            ax.set_ylabel("ΔPSNR vs baseline (dB)")
            ax.set_title(f"{dataset} x{scale}")
            ax.legend()
            ax.grid(alpha=0.3)
            save(fig, out / f"{_safe(dataset)}_x{scale}_entropy_dpsnr.png")
    path = out / "results.json"
    write_text_atomic(path, json.dumps(_json_ready(report), indent=1) + "\n")
    written.append(path)
    return written


def _collect_methods(method, checkpoint, onnx, engine, device: str, scales) -> tuple[dict, list[int]]:
    """name -> upscaler (or factory) for --method/--checkpoint/--onnx/--engine, and the models' scales."""
    from fgdsr.inference import BicubicUpscaler

    methods: dict = {}
    model_scales: list[int] = []
    for m in method or []:
        if m.lower() != "bicubic":
            raise UserError(f"--method '{m}': unknown; use bicubic, or --checkpoint PATH for a trained model")
        methods["bicubic"] = BicubicUpscaler
    models = [("--checkpoint", p) for p in checkpoint or []]
    models += [("--onnx", p) for p in onnx or []] + [("--engine", p) for p in engine or []]
    for option, path in models:
        if option == "--checkpoint":
            name, upscaler, s = _checkpoint_method(path, device, scales)
        else:
            name, upscaler, s = _deployed_method(path, option, scales)
        if name in methods:
            raise UserError(f"{option} {path}: two methods named '{name}'; rename one")
        methods[name] = upscaler
        model_scales.append(s)
    if not methods:
        methods["bicubic"] = BicubicUpscaler
    return methods, model_scales


def _baseline(baseline: str | None, methods: dict, device: str, scales) -> tuple[str | None, dict | None]:
    """--baseline: (the method name to compare against, added to `methods`) or (None, a saved results report)."""
    from fgdsr.inference import BicubicUpscaler

    if baseline is None:
        return None, None
    bpath = Path(baseline)
    if baseline.lower() == "bicubic":
        methods.setdefault("bicubic", BicubicUpscaler)
        return "bicubic", None
    if bpath.suffix.lower() == ".json":
        if not bpath.is_file():
            raise UserError(
                f"--baseline {baseline}: file not found; give a results .json from --json or --out"
            )
        try:
            base_report = json.loads(bpath.read_text())
            if not isinstance(base_report.get("results"), list):
                raise ValueError("no 'results' list")
        except (ValueError, AttributeError) as e:
            raise UserError(f"--baseline {baseline}: not a results file of 'fgdsr evaluate' ({e})") from e
        return None, base_report
    base_name, factory, _ = _checkpoint_method(baseline, device, scales)
    if base_name in methods:
        base_name = f"{base_name} (baseline)"
    methods[base_name] = factory
    return base_name, None


def evaluate(
    method: list[str] = typer.Option(None, "--method", "-m", help="bicubic (default unless --checkpoint)."),
    dataset: list[str] = typer.Option(
        None,
        "--dataset",
        "-d",
        help="Set5, Set14, BSD100, Urban100, T91, BSD200, DIV2K, builtin-eval, A+B or a folder.",
    ),
    scale: list[str] = typer.Option(
        None, "--scale", "-s", help="Integer >= 2, repeatable (default 4, or the checkpoint's)."
    ),
    data_root: Path = typer.Option(
        None, "--data-root", help="Folder holding the data sets (default $FGDSR_DATA_ROOT or ./datasets)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout and nothing else."),
    out: Path = typer.Option(None, "--out", help="Write CSVs, scatter plots and results.json here."),
    checkpoint: list[str] = typer.Option(None, "--checkpoint", help="Checkpoint folder(s) to evaluate."),
    onnx: list[str] = typer.Option(
        None, "--onnx", help="Exported .onnx file(s) (fgdsr export) on ONNX Runtime."
    ),
    engine: list[str] = typer.Option(None, "--engine", help="TensorRT engine file(s) (fgdsr build-engine)."),
    baseline: str = typer.Option(
        None,
        "--baseline",
        help="ΔPSNR against: 'bicubic', a checkpoint folder or a results .json (--json / --out).",
    ),
    max_images: int = typer.Option(None, "--max-images", help="Only the first N images of each set."),
    device: str = typer.Option("cpu", "--device", help="Device for checkpoints: cpu, cuda, cuda:1."),
    lr_uint8: bool = typer.Option(False, "--lr-uint8", help="Protocol variant: round the LR to uint8."),
    authors_protocol: bool = typer.Option(
        False,
        "--authors-protocol",
        help="LapSRN's own script: Y not rounded, single-channel files through rgb2ycbcr (reproduces its rows).",
    ),
) -> None:
    """Evaluate bicubic, checkpoints or deployed models: PSNR/SSIM on Y (MATLAB protocol), HR entropy per image."""
    from fgdsr.evaluate import attach_baseline, check_scale
    from fgdsr.evaluate import evaluate as run_evaluate

    check_out_folder(out)
    scales = [check_scale(s) for s in scale] if scale else None
    if max_images is not None and max_images < 1:
        raise UserError(f"--max-images {max_images}: must be at least 1")
    if device != "cpu":
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"--device {device}: CUDA is not available here; use --device cpu")
    methods, model_scales = _collect_methods(method, checkpoint, onnx, engine, device, scales)
    if scales is None:
        scales = sorted(set(model_scales)) or [4]
        if len(scales) > 1:
            raise UserError(
                "--checkpoint: the models have different scales; give --scale and one model per scale"
            )
    base_name, base_report = _baseline(baseline, methods, device, scales)
    if not dataset:  # the default runs on a fresh machine: no data set to download
        typer.echo("evaluate: no --dataset given; using builtin-eval (5 built-in photos); "
                   "pass --dataset Set5 (etc.) for the paper's tables", err=True)  # fmt: skip
    datasets = list(dataset) if dataset else ["builtin-eval"]
    report = run_evaluate(
        methods,
        datasets,
        scales,
        data_root=data_root,
        max_images=max_images,
        baseline=base_name,
        lr_uint8=lr_uint8,
        y_rounded=not authors_protocol,
        gray_as_y=not authors_protocol,
    )
    if base_report is not None:
        attach_baseline(report, base_report)
    if out is not None:
        written = write_outputs(report, out)
        if not json_out:
            typer.echo(f"wrote {len(written)} files to {out}", err=True)
    if json_out:
        typer.echo(json.dumps(_json_ready(report)))
    else:
        _print_tables(report)
