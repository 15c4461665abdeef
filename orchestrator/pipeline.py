"""`fgdsr pipeline`: the whole job in one command.

tune (Ray Tune; an l1 baseline and an fd trial always among the trials) → best FGD trial and best baseline
trial → ONNX export of both → engines (TensorRT where importable with a GPU, else ONNX Runtime) → benchmark
candidate vs baseline → evaluate bicubic, baseline and FGD on the eval sets → `<out>/report.md` + figures +
`pipeline.json`, every artefact also attached to the sweep's MLflow parent run.

Every step calls the library that owns it (`orchestrator.tune`, `trt.export`, `trt.engine`, `trt.bench`,
`trt.complexity`, `fgdsr.evaluate`); this module only wires them and writes the report.

The pipeline config (`fgdsr/configs/demo.yaml` is the default) is a YAML mapping:
`train` (a TrainConfig YAML), `set` (field overrides), `space` (a search-space YAML or mapping), `tune`
(options of `fgdsr tune`), `eval.datasets`, `benchmark` (hr_size, precision, timing), `figures.crop`.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fgdsr.config import CONFIG_DIR
from fgdsr.errors import UserError
from orchestrator import figures, report

DEMO_CONFIG = CONFIG_DIR / "demo.yaml"
TOP_KEYS = ("train", "set", "space", "tune", "eval", "benchmark", "figures")
TUNE_KEYS = (
    "gpus", "gpus_per_trial", "cpus_per_trial", "num_samples", "search", "scheduler", "address", "storage",
    "experiment", "max_failures", "seed",
)  # fmt: skip
BENCH_KEYS = ("hr_size", "precision", "warmup_ms", "min_iters", "min_time_s", "batch", "tolerance")
ROLES = ("bicubic", "baseline", "fgd")


@dataclass
class PipelineConfig:
    """A parsed pipeline YAML (paths resolved)."""

    source: str
    train: str  # TrainConfig YAML
    overrides: dict[str, Any] = field(default_factory=dict)
    space: str | dict[str, Any] | None = None  # a YAML path, or a mapping written next to the report
    tune: dict[str, Any] = field(default_factory=dict)
    eval_datasets: list[str] = field(default_factory=lambda: ["builtin-eval"])
    bench: dict[str, Any] = field(default_factory=dict)
    crop: int = 96


@dataclass
class PipelineOptions:
    config: PipelineConfig
    out: Path = Path("runs/pipeline")
    backend: str = "auto"
    eval_datasets: list[str] | None = None
    data_root: str | None = None
    tracking_uri: str | None = None
    experiment: str | None = None
    quiet: bool = False
    command_line: str = ""


def _resolve_path(value: str, base: Path, key: str, source: Path) -> str:
    """A path from the config: relative to the config file, else to fgdsr/configs/."""
    p = Path(value).expanduser()
    for cand in [p] if p.is_absolute() else [base / p, CONFIG_DIR / p, Path.cwd() / p]:
        if cand.is_file():
            return str(cand.resolve())
    raise UserError(
        f"{source}: '{key}: {value}' not found (relative to the config, fgdsr/configs/ or the cwd)"
    )


def load_pipeline_config(
    path: str | Path | None = None, space: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> PipelineConfig:
    """Read and validate a pipeline YAML (None: the shipped CPU demo), with a `--space` file and `--set` fields."""
    from fgdsr.config import load_config, read_yaml_mapping

    src = Path(path) if path is not None else DEMO_CONFIG
    data = read_yaml_mapping(
        src,
        f"--config {src}: file not found; pass a pipeline YAML like fgdsr/configs/demo.yaml",
        f"with keys {', '.join(TOP_KEYS)}",
    )
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise UserError(f"{src}: unknown keys {unknown}; a pipeline config has {', '.join(TOP_KEYS)}")
    if "train" not in data or not isinstance(data["train"], str):
        raise UserError(f"{src}: 'train' must name a TrainConfig YAML (e.g. train: tune-demo.yaml)")
    base = src.resolve().parent
    cfg = PipelineConfig(source=str(src), train=_resolve_path(data["train"], base, "train", src))
    sets = data.get("set") or {}
    if not isinstance(sets, dict):
        raise UserError(f"{src}: 'set' must be a mapping of TrainConfig fields")
    cfg.overrides = {**sets, **(overrides or {})}
    load_config(cfg.train, cfg.overrides)  # validate fields now, not in a trial
    if space is not None:
        if not Path(space).is_file():
            raise UserError(f"--space {space}: file not found")
        cfg.space = str(Path(space).resolve())
    elif isinstance(data.get("space"), str):
        cfg.space = _resolve_path(data["space"], base, "space", src)
    elif isinstance(data.get("space"), dict):
        cfg.space = data["space"]
    elif data.get("space") is not None:
        raise UserError(f"{src}: 'space' must be a YAML path or a mapping like fgdsr/configs/space.yaml")
    for key, allowed, target in (("tune", TUNE_KEYS, cfg.tune), ("benchmark", BENCH_KEYS, cfg.bench)):
        section = data.get(key) or {}
        if not isinstance(section, dict) or set(section) - set(allowed):
            bad = sorted(set(section) - set(allowed)) if isinstance(section, dict) else section
            raise UserError(f"{src}: '{key}' has unknown entries {bad}; allowed: {', '.join(allowed)}")
        target.update(section)
    ev = data.get("eval") or {}
    if not isinstance(ev, dict) or set(ev) - {"datasets"}:
        raise UserError(f"{src}: 'eval' takes 'datasets: [NAME, …]'")
    if "datasets" in ev:
        ds = ev["datasets"]
        cfg.eval_datasets = [ds] if isinstance(ds, str) else [str(d) for d in ds]
    figs = data.get("figures") or {}
    if not isinstance(figs, dict) or set(figs) - {"crop"}:
        raise UserError(f"{src}: 'figures' takes 'crop: PIXELS'")
    cfg.crop = int(figs.get("crop", cfg.crop))
    if cfg.crop < 8:
        raise UserError(f"{src}: figures.crop must be at least 8 pixels")
    return cfg


# ------------------------------------------------------------------------------------------------ backend


def choose_backend(requested: str) -> tuple[str, str]:
    """-> (backend, why). auto: TensorRT when `tensorrt` imports and a CUDA GPU is visible, else ONNX Runtime."""
    if requested in ("onnxruntime", "torch"):
        return requested, "asked for with --backend"
    import torch

    try:
        import tensorrt  # noqa: F401

        trt_ok, trt_why = True, f"TensorRT {tensorrt.__version__} importable"
    except ImportError:
        trt_ok, trt_why = False, "TensorRT not importable (pip install 'fgdsr[trt]' on a GPU machine)"
    gpu = torch.cuda.is_available()
    if requested == "tensorrt":
        if not (trt_ok and gpu):
            raise UserError(f"--backend tensorrt: {trt_why if not trt_ok else 'no CUDA GPU visible'}; "
                            "use --backend onnxruntime or auto")  # fmt: skip
        return "tensorrt", "asked for with --backend"
    if trt_ok and gpu:
        return "tensorrt", f"{trt_why} and GPU {torch.cuda.get_device_name(0)} visible"
    if not trt_ok:
        return "onnxruntime", trt_why
    return "onnxruntime", "TensorRT importable but no CUDA GPU visible"


# ----------------------------------------------------------------------------------------------- progress


class SweepProgress:
    """Rich progress bars for a running sweep, read from MLflow (the trials' validation steps).

    A background thread polls the sweep's parent run (found by its `fgdsr.sweep` tag) and its child runs every
    `every` seconds: one bar per trial (last validated step / max_steps) and one for finished trials.
    """

    def __init__(self, progress, uri: str, experiment_id: str, sweep_name: str, trials: int, max_steps: int,
                 every: float = 2.0) -> None:  # fmt: skip
        self.progress, self.uri, self.exp_id = progress, uri, experiment_id
        self.name, self.max_steps, self.every = sweep_name, max_steps, every
        self.total = progress.add_task("tune: trials finished", total=trials)
        self.tasks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> SweepProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        try:
            self._poll()
        except Exception:
            pass

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self._poll()
            except Exception:  # progress display must never break the sweep (e.g. sqlite busy)
                pass

    def _poll(self) -> None:
        from orchestrator import tracking

        c = tracking.client(self.uri)
        parents = c.search_runs(
            [self.exp_id], filter_string=f"tags.`fgdsr.sweep` = '{self.name}'", max_results=1
        )
        if not parents:
            return
        done = 0
        for run in tracking.child_runs(self.uri, self.exp_id, parents[0].info.run_id):
            rid = run.info.run_id
            hist = c.get_metric_history(rid, "val_psnr")
            step = max((m.step for m in hist), default=0)
            label = f"  trial {run.data.tags.get('trial_id', rid[:6])} ({run.data.tags.get('variant', '?')})"
            if rid not in self.tasks:
                self.tasks[rid] = self.progress.add_task(label, total=self.max_steps)
            psnr = f" {hist[-1].value:.2f} dB" if hist else ""
            finished = run.info.status in ("FINISHED", "FAILED", "KILLED")
            done += finished
            self.progress.update(self.tasks[rid], completed=self.max_steps if finished else step,
                                 description=f"{label}{psnr} {run.info.status.lower()}")  # fmt: skip
        self.progress.update(self.total, completed=done)


# ----------------------------------------------------------------------------------------------- steps


def _trial_row(t) -> dict[str, Any]:
    """A tune TrialSummary as a row of the trials table (fields of the trial's effective config)."""
    cfg = dict(t.config)
    return {
        "trial_id": t.trial_id,
        "variant": t.variant,
        "alpha": _float(cfg.get("alpha")),
        "beta": _float(cfg.get("beta")),
        "bins": cfg.get("bins"),
        "lr": _float(cfg.get("lr")),
        "steps": t.steps,
        "psnr": t.best_val_psnr,
        "ssim": t.best_val_ssim,
        "state": t.state,
        "mlflow_run_id": t.mlflow_run_id,
        "config": cfg,
    }


def _float(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def pick_best(result) -> tuple[Any, Any]:
    """(best l1 trial, best FGD trial of any other variant) by best validation PSNR; one-line error if missing."""
    if result.partial:
        raise UserError(
            "pipeline: the sweep was interrupted before every trial finished, so there is no honest 'best'; "
            f"finish it with fgdsr tune --resume --out {result.plan['out']} --name {result.plan['name']}"
        )
    done = [t for t in result.trials if t.state == "TERMINATED" and t.best_val_psnr is not None]
    base = [t for t in done if t.variant == "l1"]
    cand = [t for t in done if t.variant != "l1"]
    if not base:
        raise UserError("pipeline: no l1 baseline trial finished (see the trials table in the sweep); rerun")
    if not cand:
        raise UserError("pipeline: no FGD trial (cs/fd/aux) finished; put a loss choice with an FGD variant in "
                        "the search space")  # fmt: skip
    return max(base, key=lambda t: t.best_val_psnr), max(cand, key=lambda t: t.best_val_psnr)


def _metric_histories(uri: str, trials: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Validation PSNR per step of every trial, from its MLflow child run."""
    from orchestrator import tracking

    c = tracking.client(uri)
    out = {}
    for t in trials:
        if not t.get("mlflow_run_id"):
            continue
        hist = tracking.retry(lambda t=t: c.get_metric_history(t["mlflow_run_id"], "val_psnr"))
        out[f"{t['trial_id']} ({t['variant']})"] = sorted((int(m.step), float(m.value)) for m in hist)
    return out


def export_models(dirs: dict[str, Path], out: Path, precision: str = "fp32") -> dict[str, dict[str, Any]]:
    """ONNX export of each checkpoint (`role -> dir`) into `<out>/models/<role>.onnx` (+ sidecar)."""
    from trt.export import export_source
    from trt.sources import Source

    res = {}
    for role, d in dirs.items():
        path = out / "models" / f"{role}.onnx"
        meta = export_source(Source("checkpoint", Path(d), str(d)), path, precision=precision)
        res[role] = {"onnx": str(path), "sidecar": meta}
    return res


def _hr_size(bench: dict[str, Any]):
    """The benchmark's HR size as a trt.shapes.Size ('320x180' or [320, 180])."""
    from trt.shapes import Size, parse_size

    v = bench.get("hr_size", "1280x720")
    return (
        parse_size(v, "benchmark.hr_size") if isinstance(v, str) else Size(height=int(v[1]), width=int(v[0]))
    )


def complexity_rows(dirs: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Params, kernel weights, Mult-Adds (true, naive; HR 1280×720) of each checkpoint."""
    from trt.complexity import complexity

    out = {}
    for role, d in dirs.items():
        c = complexity(str(d))  # HR 1280x720 (trt.complexity.DEFAULT_HR)
        info, prof = c.record(), c.counts
        out[role] = {**info, "mult_adds_true": prof.mult_adds_true, "mult_adds_naive": prof.mult_adds_naive}
    return out


# ------------------------------------------------------------------------------------------ evaluation


def make_upscalers(dirs: dict[str, Path], scale: int, device: str = "cpu") -> dict[str, Any]:
    """role -> upscaler (LR RGB -> SR RGB uint8): bicubic, and each checkpoint through torch on `device`."""
    from fgdsr.checkpoint import load_model
    from fgdsr.inference import BicubicUpscaler, ModelUpscaler

    ups: dict[str, Any] = {"bicubic": BicubicUpscaler(scale)}
    for role, d in dirs.items():
        model, _cfg, _meta = load_model(d)
        ups[role] = ModelUpscaler(model.eval(), scale, device)
    return ups


def evaluate_roles(upscalers: dict[str, Any], datasets: list[str], scale: int, data_root: str | None):
    """fgdsr.evaluate over the roles -> (the evaluate JSON, per-image rows joined across roles).

    Per-image rows: dataset, name, entropy, psnr_<role>, ssim_<role>, psnr_baseline/psnr_fgd, delta.
    """
    from fgdsr.evaluate import evaluate

    res = evaluate(upscalers, datasets, [scale], data_root)
    images: dict[tuple[str, str], dict[str, Any]] = {}
    for r in res["results"]:
        for im in r.get("images", []):
            row = images.setdefault((r["dataset"], im["name"]), {"dataset": r["dataset"], "name": im["name"]})
            row["entropy"] = im.get("entropy", row.get("entropy"))
            row[f"psnr_{r['method']}"] = im["psnr"]
            row[f"ssim_{r['method']}"] = im["ssim"]
    rows = [dict(r, delta=r["psnr_fgd"] - r["psnr_baseline"]) for r in images.values()
            if "psnr_fgd" in r and "psnr_baseline" in r]  # fmt: skip
    return res, rows


def _hr_and_lr(dataset: str, name: str, scale: int, data_root: str | None):
    """(HR modcropped uint8 (H, W, 3), its protocol LR, gray source?) exactly as `fgdsr.evaluate` makes them."""
    from fgdsr.data.datasets import resolve_dataset
    from fgdsr.evaluate import lr_image

    ds = resolve_dataset(dataset, data_root)
    i = ds.names.index(name)
    hr, lr = lr_image(ds, i, scale)
    return hr, lr, ds.is_gray(i)


def fig5_rows(images: list[dict[str, Any]], upscalers: dict[str, Any], scale: int, data_root: str | None,
              crop: int) -> list[dict[str, Any]]:  # fmt: skip
    """Crops for the images with the largest and smallest ΔPSNR: the window where FGD gains (resp. loses) most."""

    from fgdsr.metrics.protocol import evaluate_pair, y_channel

    if not images:
        return []
    ranked = sorted(images, key=lambda r: r["delta"])
    picks = [("largest ΔPSNR", ranked[-1], 1.0)]
    if len(ranked) > 1:
        picks.append(("smallest ΔPSNR", ranked[0], -1.0))
    rows = []
    for title, im, sign in picks:
        hr, lr, gray = _hr_and_lr(im["dataset"], im["name"], scale, data_root)
        srs = {role: upscalers[role](lr) for role in ROLES}
        y_hr = y_channel(hr, gray)
        err = {role: (y_channel(srs[role], gray) - y_hr) ** 2 for role in ("baseline", "fgd")}
        y0, x0, s = figures.best_crop_box(err["baseline"], err["fgd"], crop, sign)
        crops = {"HR": hr[y0 : y0 + s, x0 : x0 + s]}
        psnr = {"HR": None}
        for role, label in (("bicubic", "bicubic"), ("baseline", "baseline (l1)"), ("fgd", "FGD")):
            crops[label] = srs[role][y0 : y0 + s, x0 : x0 + s]
            psnr[label] = evaluate_pair(srs[role], hr, scale, gray=gray)[
                0
            ]  # whole image, the protocol's PSNR
        rows.append({"title": f"{title}: {im['dataset']}/{im['name']} ({im['delta']:+.2f} dB)", "crops": crops,
                     "psnr": psnr, "image": im["name"], "dataset": im["dataset"], "delta": im["delta"],
                     "box": [y0, x0, s]})  # fmt: skip
    return rows


# ---------------------------------------------------------------------------------------------- report


def table2_rows(evald: dict[str, Any], comp: dict[str, dict[str, Any]], datasets: list[str], scale: int):
    """Table-2-style rows: method, params, Mult-Adds (HR 1280×720, true/naive), PSNR/SSIM per set at `scale`."""
    by = {(r["method"], r["dataset"], r["scale"]): r for r in evald["results"]}
    names = {"bicubic": "Bicubic", "baseline": "Baseline (best l1 trial)", "fgd": "FGD (best trial)"}
    rows = []
    for role in ROLES:
        c = comp.get(role)
        row = {"method": names[role], "role": role, "params": c["params"] if c else None,
               "weights": c["weights"] if c else None, "mult_adds_true": c["mult_adds_true"] if c else None,
               "mult_adds_naive": c["mult_adds_naive"] if c else None, "sets": {}}  # fmt: skip
        for ds in datasets:
            r = next(
                (v for (m, d, s), v in by.items() if m == role and s == scale and d.lower() == ds.lower()),
                None,
            )
            row["sets"][ds] = {"psnr": r["psnr"], "ssim": r["ssim"]} if r else None
        rows.append(row)
    return rows


def below_bicubic(t2: list[dict[str, Any]], datasets: list[str], steps: int) -> str:
    """A plain sentence when a trained model is still below bicubic on some set (else '')."""
    by = {r["role"]: r["sets"] for r in t2}
    worse = [f"{role} on {ds}" for role in ("baseline", "fgd") for ds in datasets
             if by[role].get(ds) and by["bicubic"].get(ds) and by[role][ds]["psnr"] < by["bicubic"][ds]["psnr"]]  # fmt: skip
    if not worse:
        return ""
    verb = "is" if len(worse) == 1 else "are"
    return (f"after {steps} training steps, {' and '.join(worse)} {verb} still below bicubic: expected for a tiny model "
            "this early (LapSRN learns its upsampling from scratch); train longer (--max-steps, or --gpus 1 "
            "with a larger --config) before reading anything into the PSNR columns.")  # fmt: skip


def render_report(s: dict[str, Any]) -> str:
    """The pipeline's report.md from its summary dict (`pipeline.json`)."""
    scale, datasets = s["scale"], s["eval_datasets"]
    parts = [
        "# fgdsr pipeline report",
        f"Run {s['date']} on {s['machine']} in {s['wall_s']:.0f} s. Command: `{s['command']}`. Config: "
        f"`{s['config']}`. MLflow: `{s['tracking_uri']}`, experiment `{s['experiment']}`, sweep parent run "
        f"`{s['parent_run_id']}` (every artefact below is attached to it under `pipeline/`; open with "
        f"`{s['ui_command']}`).",
    ]
    if s.get("note"):
        parts.append(f"> {s['note']}")
    b, f = s["best"]["baseline"], s["best"]["fgd"]
    parts += [
        "## Verdict",
        f"- Best baseline: trial `{b['trial_id']}` (l1), validation PSNR {b['psnr']:.2f} dB; best FGD: trial "
        f"`{f['trial_id']}` ({f['variant']}), validation PSNR {f['psnr']:.2f} dB.",
        "- "
        + "; ".join(
            f"{ds} ×{scale}: FGD − baseline = {report.fmt_signed(s['delta_by_set'].get(ds))} dB"
            for ds in datasets
        ),  # fmt: skip
        *([f"- Note: {s['below_bicubic']}"] if s.get("below_bicubic") else []),
        f"- Deployment ({s['backend']}, chosen because: {s['backend_reason']}): {s['benchmark']['verdict']}.",
        "## Trials",
        report.md_table(*report.trials_table(s["trials"])),
        "PSNR/SSIM: the best validation values of each trial (validation set of the training config). "
        "Validation PSNR of every trial against the step:",
        "![PSNR vs step](figures/psnr_vs_step.png)",
        f"## Table 2 style (×{scale}, the literature's protocol: Y channel, shave {scale})",
    ]
    headers = ["method", "params (weights)", "Mult-Adds true / naive"] + [
        f"{ds} PSNR/SSIM" for ds in datasets
    ]
    rows = []
    for r in s["table2"]:
        ma = ("—" if r["mult_adds_true"] is None
              else f"{report.fmt_gmac(r['mult_adds_true'])} / {report.fmt_gmac(r['mult_adds_naive'])}")  # fmt: skip
        cells = [r["method"], report.fmt_count(r["weights"]), ma]
        for ds in datasets:
            v = r["sets"].get(ds)
            cells.append("—" if v is None else f"{v['psnr']:.2f} / {v['ssim']:.4f}")
        rows.append(cells)
    parts += [
        report.md_table(headers, rows),
        "Params = kernel weights (the paper's convention); Mult-Adds for an HR output of 1280×720.",
        f"## Benchmark: candidate (FGD) vs baseline on {s['backend']}",
        f"Backend `{s['backend']}`: {s['backend_reason']}. ONNX models: "
        + (", ".join(f"`models/{Path(v).name}`" for v in s["onnx"].values()) or "none")
        + ".",
        report.md_table(*report.benchmark_table(s["benchmark"])),
        f"**Verdict:** {s['benchmark']['verdict']}. Method: {s['benchmark_method']}. Full report: "
        "[benchmark/benchmark.md](benchmark/benchmark.md).",
        "![benchmark](benchmark/benchmark.png)",
        "## Fig. 1 analysis: image entropy vs PSNR and vs ΔPSNR",
    ]
    fits = s["fig1"]
    parts.append(
        f"Linear trends over {fits['delta']['n']} images: baseline PSNR {report.fmt_signed(fits['baseline']['slope'])} "
        f"dB/bit, FGD PSNR {report.fmt_signed(fits['fgd']['slope'])} dB/bit, ΔPSNR "
        f"{report.fmt_signed(fits['delta']['slope'], 3)} dB/bit (Pearson r = {report.fmt(fits['delta']['r'])}). "
        "The paper claims FGD's gain grows with entropy (a positive ΔPSNR slope)"
        + ("; with this few images the fit is only indicative." if fits["delta"]["n"] < 20 else ".")
    )
    parts.append("![Fig. 1](figures/fig1_entropy.png)")
    img_rows = [[r["dataset"], r["name"], f"{r['entropy']:.3f}", f"{r.get('psnr_bicubic', float('nan')):.2f}",
                 f"{r['psnr_baseline']:.2f}", f"{r['psnr_fgd']:.2f}", report.fmt_signed(r["delta"])]
                for r in sorted(s["images"], key=lambda r: r["entropy"])]  # fmt: skip
    parts.append(
        report.md_table(["set", "image", "entropy (bits)", "bicubic", "baseline", "FGD", "Δ"], img_rows)
    )
    parts.append("## Fig. 5 analysis: crops with the largest and smallest ΔPSNR")
    for r in s["fig5"]:
        parts.append(f"- {r['title']}: crop {r['box'][2]}×{r['box'][2]} at (y={r['box'][0]}, x={r['box'][1]}), "
                     "the window where FGD's squared error differs most from the baseline's.")  # fmt: skip
    parts.append("![Fig. 5](figures/fig5_crops.png)")
    return "\n\n".join(parts) + "\n"


def terminal_summary(s: dict[str, Any], console) -> None:
    """The verdict table on the terminal: per method PSNR per set, params, latency; then the verdict line."""
    from rich.markup import escape
    from rich.table import Table

    scale = s["scale"]
    t = Table(title=f"fgdsr pipeline: best FGD vs best baseline (×{scale}, {s['backend']})")
    t.add_column("method")
    t.add_column("params")
    for ds in s["eval_datasets"]:
        t.add_column(f"{ds} PSNR/SSIM", justify="right")
    t.add_column("latency ms (median)", justify="right")
    lat = {r["role"]: r["latency_ms"]["median"] for r in s["benchmark"]["rows"]}
    for r in s["table2"]:
        cells = [r["method"], report.fmt_count(r["weights"])]
        for ds in s["eval_datasets"]:
            v = r["sets"].get(ds)
            cells.append("—" if v is None else f"{v['psnr']:.2f} / {v['ssim']:.4f}")
        role = {"baseline": "baseline", "fgd": "candidate"}.get(r["role"])
        cells.append(report.fmt(lat.get(role), 2) if role else "—")
        t.add_row(*cells)
    console.print(t)
    style = "green" if s["benchmark"].get("no_extra_cost") else "yellow"
    console.print(f"[{style}]verdict: {escape(s['benchmark']['verdict'])}[/{style}]")
    gains = ", ".join(f"{ds} {report.fmt_signed(s['delta_by_set'].get(ds))} dB" for ds in s["eval_datasets"])
    console.print(f"FGD − baseline PSNR: {gains}", markup=False)
    if s.get("below_bicubic"):
        console.print(f"note: {s['below_bicubic']}", markup=False, style="yellow")


def attach_to_mlflow(uri: str, run_id: str, out: Path, s: dict[str, Any]) -> list[str]:
    """Log report, JSON, figures, benchmark files and ONNX models to the sweep's parent run under `pipeline/`."""
    from mlflow.entities import Metric

    from orchestrator import tracking

    c = tracking.client(uri)
    logged = []
    for f in ("report.md", "pipeline.json"):
        tracking.retry(lambda f=f: c.log_artifact(run_id, str(out / f), "pipeline"))
        logged.append(f"pipeline/{f}")
    for sub in ("figures", "benchmark", "models"):
        d = out / sub
        if d.is_dir():
            tracking.retry(lambda d=d, sub=sub: c.log_artifacts(run_id, str(d), f"pipeline/{sub}"))
            logged += [f"pipeline/{sub}/{p.name}" for p in sorted(d.iterdir()) if p.is_file()]
    now = int(time.time() * 1000)
    metrics = {"pipeline_latency_ratio": s["benchmark"]["ratios"]["latency"]}
    for r in s["table2"]:
        for ds, v in r["sets"].items():
            if v is not None:
                metrics[f"pipeline_{r['role']}_{ds}_psnr"] = v["psnr"]
                metrics[f"pipeline_{r['role']}_{ds}_ssim"] = v["ssim"]
    batch = [Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None and not math.isnan(v)]
    tracking.retry(lambda: c.log_batch(run_id, metrics=batch))
    for k, v in (("pipeline.backend", s["backend"]), ("pipeline.verdict", s["benchmark"]["verdict"]),
                 ("pipeline.baseline_trial", s["best"]["baseline"]["trial_id"]),
                 ("pipeline.fgd_trial", s["best"]["fgd"]["trial_id"])):  # fmt: skip
        tracking.retry(lambda k=k, v=v: c.set_tag(run_id, k, str(v)[:5000]))
    return logged


# ------------------------------------------------------------------------------------------------- main


def _machine() -> str:
    import os
    import platform

    import torch

    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{platform.node()} ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs{gpu})"


def run_pipeline(opts: PipelineOptions) -> dict[str, Any]:
    """Run every step; write `<out>/report.md`, `pipeline.json`, figures; return the summary dict."""
    import shlex
    import sys

    import yaml
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from orchestrator import tracking
    from orchestrator.tune import TuneOptions, make_plan, run_sweep
    from trt.bench import BenchmarkPlan, run_benchmark
    from trt.report import write_report
    from trt.timing import TimingPlan

    t0 = time.perf_counter()
    console = Console(quiet=opts.quiet)
    pcfg = opts.config
    out = Path(opts.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(exist_ok=True)
    uri = tracking.resolve_tracking_uri(opts.tracking_uri)
    experiment = opts.experiment or pcfg.tune.get("experiment") or "fgdsr"
    overrides = dict(pcfg.overrides)
    data_root = opts.data_root
    if data_root:
        overrides["data_root"] = str(Path(data_root).resolve())
    space = pcfg.space
    if isinstance(space, dict):
        space = str(report.write_text_atomic(out / "space.yaml", yaml.safe_dump(space)))
    datasets = opts.eval_datasets or pcfg.eval_datasets
    command = opts.command_line or shlex.join(["fgdsr", *sys.argv[1:]])
    sweep_name = "pipeline-" + time.strftime("%Y%m%d-%H%M%S")
    tune_kw = {k: v for k, v in pcfg.tune.items() if k != "experiment"}
    topts = TuneOptions(config=pcfg.train, space=space, overrides=overrides, out=str(out / "tune"), name=sweep_name,
                        tracking_uri=uri, experiment=experiment, quiet=True, command_line=command,
                        force_variants=("l1", "fd"), **tune_kw)  # fmt: skip
    plan, base, _space = make_plan(topts)  # validates everything before Ray starts
    backend, why = choose_backend(opts.backend)
    scale = base.scale
    data_root = data_root or base.data_root
    console.print(f"[bold]fgdsr pipeline[/bold] → {escape(str(out))}")
    console.print(f"  sweep '{sweep_name}': {plan['trials']} trials × {base.max_steps} steps "
                  f"({plan['search']}, {plan['scheduler']}, {plan['resources']['concurrency']} at once); "
                  f"eval on {', '.join(datasets)}; backend {backend} ({why})", markup=False)  # fmt: skip

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console, transient=False) as progress:
        stages = progress.add_task("pipeline", total=6)
        exp_id = tracking.init_experiment(uri, experiment)
        with SweepProgress(progress, uri, exp_id, sweep_name, plan["trials"], base.max_steps):
            sweep = run_sweep(topts)
        base_t, fgd_t = pick_best(sweep)
        dirs = {"baseline": Path(sweep.variant_dirs["l1"]), "fgd": Path(sweep.variant_dirs[fgd_t.variant])}
        progress.update(stages, advance=1, description="pipeline: export ONNX")

        precision = str(pcfg.bench.get("precision", "fp32"))
        try:
            onnx = export_models(dirs, out, precision=precision)
        except UserError as e:
            if backend == "torch":
                raise
            # A failed export (e.g. the ONNX Runtime parity check) must not hide the rest of the job: say so
            # loudly in the report and benchmark the checkpoints on torch instead.
            onnx, backend = {}, "torch"
            why = f"ONNX export failed ({e}); fell back to torch"
            console.print(f"warning: {why}", markup=False, style="yellow")
        comp = complexity_rows(dirs)
        progress.update(stages, advance=1, description=f"pipeline: benchmark on {backend}")

        bench_plan = TimingPlan(
            warmup_ms=float(pcfg.bench.get("warmup_ms", 200.0)),
            min_iters=int(pcfg.bench.get("min_iters", 200)),
            min_seconds=float(pcfg.bench.get("min_time_s", 3.0)),
        )
        if backend == "torch":
            srcs = {r: str(d) for r, d in dirs.items()}
        else:  # onnxruntime runs the .onnx; tensorrt builds engines from it into <out>/models
            srcs = {r: v["onnx"] for r, v in onnx.items()}
        import torch

        device = (
            "cuda" if backend == "tensorrt" or (backend == "torch" and torch.cuda.is_available()) else "cpu"
        )
        bench_result = run_benchmark(BenchmarkPlan(
            srcs["baseline"], srcs["fgd"], backend=backend, precision=precision, scale=scale,
            hr_size=_hr_size(pcfg.bench), batch=int(pcfg.bench.get("batch", 1)), dataset=datasets[0],
            data_root=data_root, device=device, timing=bench_plan,
            tolerance=float(pcfg.bench.get("tolerance", 0.03)), workdir=str(out / "models"),
        ))  # fmt: skip
        write_report(bench_result, out / "benchmark")
        bench = bench_result.to_dict()
        progress.update(stages, advance=1, description="pipeline: evaluate bicubic, baseline, FGD")

        ups = make_upscalers(dirs, scale, "cuda" if torch.cuda.is_available() else "cpu")
        evald, images = evaluate_roles(ups, datasets, scale, data_root)
        datasets = list(dict.fromkeys(r["dataset"] for r in evald["results"]))  # a folder path -> its name
        progress.update(stages, advance=1, description="pipeline: figures")

        trials = [_trial_row(t) for t in sweep.trials]
        histories = _metric_histories(uri, trials)
        figures.plot_psnr_vs_step(histories, out / "figures" / "psnr_vs_step.png")
        fits = figures.plot_entropy_analysis(images, out / "figures" / "fig1_entropy.png")
        f5 = fig5_rows(images, ups, scale, data_root, pcfg.crop)
        figures.crop_grid(f5, out / "figures" / "fig5_crops.png")
        progress.update(stages, advance=1, description="pipeline: report + MLflow")

        t2 = table2_rows(evald, comp, datasets, scale)
        by_role = {r["role"]: r for r in t2}
        delta_by_set = {}
        for ds in datasets:
            a, b = by_role["fgd"]["sets"].get(ds), by_role["baseline"]["sets"].get(ds)
            delta_by_set[ds] = a["psnr"] - b["psnr"] if a and b else None
        from trt.report import method_line

        summary = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": _machine(),
            "command": command,
            "config": pcfg.source,
            "out": str(out),
            "sweep": sweep_name,
            "tracking_uri": uri,
            "experiment": experiment,
            "experiment_id": sweep.experiment_id,
            "parent_run_id": sweep.parent_run_id,
            "ui_command": "fgdsr ui" + ("" if opts.tracking_uri is None else f" --tracking-uri {uri}"),
            "scale": scale,
            "eval_datasets": datasets,
            "data_root": data_root,
            "trials": [
                {k: v for k, v in t.items() if k != "config"} | {"config": t["config"]} for t in trials
            ],
            "histories": {k: [list(p) for p in v] for k, v in histories.items()},
            "best": {
                "baseline": {**_trial_row(base_t), "checkpoint": str(dirs["baseline"])},
                "fgd": {**_trial_row(fgd_t), "checkpoint": str(dirs["fgd"])},
            },
            "backend": backend,
            "backend_reason": why,
            "onnx": {r: v["onnx"] for r, v in onnx.items()},
            "complexity": comp,
            "benchmark": bench,
            "benchmark_method": method_line(bench_result),
            "evaluation": evald,
            "table2": t2,
            "delta_by_set": delta_by_set,
            "images": images,
            "fig1": fits,
            "fig5": [{k: v for k, v in r.items() if k not in ("crops",)} for r in f5],
            "note": "CPU demo at toy size (a small LapSRN, a few hundred steps on built-in photos): it shows the "
            "machinery working end to end; its PSNR differences are not evidence about the FGD loss."
            if device == "cpu" and base.max_steps < 5000
            else "",
        }
        summary["below_bicubic"] = below_bicubic(t2, datasets, base.max_steps)
        summary["wall_s"] = time.perf_counter() - t0
        report.write_text_atomic(out / "report.md", render_report(summary))
        report.write_text_atomic(out / "pipeline.json", json.dumps(summary, indent=2, default=str) + "\n")
        summary["mlflow_artifacts"] = attach_to_mlflow(uri, sweep.parent_run_id, out, summary)
        report.write_text_atomic(out / "pipeline.json", json.dumps(summary, indent=2, default=str) + "\n")
        progress.update(stages, advance=1, description="pipeline: done")

    terminal_summary(summary, console)
    console.print(f"report: {out / 'report.md'}  (figures in {out / 'figures'}; {summary['wall_s']:.0f} s)",
                  markup=False)  # fmt: skip
    console.print(f"MLflow: parent run {sweep.parent_run_id} in experiment '{experiment}' ({uri}); "
                  f"open the UI with `{summary['ui_command']}`", markup=False)  # fmt: skip
    return summary
