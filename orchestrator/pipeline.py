"""`fgdsr pipeline`: the whole job in one command, as plan → stages → render.

plan (`make_pipeline_plan`: the sweep planned once, the backend chosen, the images that select and the images
that score) → tune (paired: every variant on the same sampled settings, as many trials each) → select (the best
finished l1 trial and the best finished FGD trial, `SweepResult.best`) → deploy (ONNX export, complexity,
benchmark on the chosen backend) → evaluate (bicubic and both variants on the report's data sets) → figures →
summary (`PipelineSummary`) → render (`orchestrator.pipeline_report`: report.md, pipeline.json, the terminal,
the MLflow parent run).

Every call into `trt` sits in one short function here (`choose_backend`, `export_models`, `complexity_rows`,
`benchmark`, `machine`), so the deployment layer can change behind them.
"""

from __future__ import annotations

import dataclasses
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fgdsr.errors import UserError
from orchestrator import figures
from orchestrator.pipeline_config import PipelineConfig
from orchestrator.pipeline_summary import (
    Comparison,
    Deployment,
    Evaluation,
    FigureData,
    JobInfo,
    PipelineSummary,
    Selection,
)
from orchestrator.plan import SweepPlan
from orchestrator.trials import SweepResult


@dataclass(frozen=True)
class PipelineOptions:
    config: PipelineConfig
    out: Path = Path("runs/pipeline")
    backend: str = "auto"
    eval_datasets: tuple[str, ...] | None = None
    data_root: str | None = None
    tracking_uri: str | None = None
    experiment: str | None = None
    quiet: bool = False
    verbose: bool = False  # library logs on the terminal instead of <out>/fgdsr.log
    command_line: str = ""


@dataclass(frozen=True)
class PipelinePlan:
    """Everything the stages need, resolved before Ray starts."""

    sweep: SweepPlan
    out: Path
    eval_datasets: tuple[str, ...]
    backend: str
    backend_reason: str
    bench: dict[str, Any]
    crop: int
    selection: Selection
    options: PipelineOptions

    @property
    def scale(self) -> int:
        return self.sweep.base.scale

    @property
    def data_root(self) -> str:
        return str(self.sweep.base.data_root)


# ------------------------------------------------------------------------------------------------ plan


def _space(pcfg: PipelineConfig):
    """The search space (a file or the config's mapping, parsed in memory), its loss axis = the variants."""
    from orchestrator import space as space_mod

    space = (
        space_mod.space_from_mapping(pcfg.space, f"{pcfg.source} (space)")
        if isinstance(pcfg.space, dict)
        else space_mod.load_space(pcfg.space)
    )
    if not pcfg.variants:
        return space
    loss = ("choice", list(pcfg.variants)) if len(pcfg.variants) > 1 else pcfg.variants[0]
    return dataclasses.replace(space, params={**space.params, "loss": loss})


def _selection(base, datasets: tuple[str, ...]) -> Selection:
    """The validation images (best-trial selection) against the images the report scores."""
    from fgdsr.data.datasets import resolve_dataset

    val = resolve_dataset(base.val_dataset, base.data_root).subset(base.val_max_images)
    scored = [resolve_dataset(d, base.data_root) for d in datasets]
    paths = {p.resolve() for d in scored for p in d.paths}
    overlap = tuple(n for n, p in zip(val.names, val.paths, strict=True) if p.resolve() in paths)
    return Selection(base.val_dataset, tuple(val.names), tuple(d.name for d in scored),
                     tuple(n for d in scored for n in d.names), overlap)  # fmt: skip


def make_pipeline_plan(opts: PipelineOptions) -> PipelinePlan:
    """The sweep's plan (paired slots, l1 + the FGD variants) and the rest of the job's choices."""
    from orchestrator.plan import TuneOptions, make_plan

    pcfg = opts.config
    out = Path(opts.out).expanduser().resolve()
    overrides = dict(pcfg.overrides)
    if opts.data_root:
        overrides["data_root"] = str(Path(opts.data_root).resolve())
    tune_kw = {k: v for k, v in pcfg.tune.items() if k != "experiment"}
    sweep = make_plan(TuneOptions(
        config=pcfg.train, space=_space(pcfg), overrides=overrides, out=str(out / "tune"),
        name="pipeline-" + time.strftime("%Y%m%d-%H%M%S"), tracking_uri=opts.tracking_uri,
        experiment=opts.experiment or pcfg.tune.get("experiment") or "fgdsr", paired=True,
        force_variants=("l1", "fd") if not pcfg.variants else ("l1",), verbose=opts.verbose,
        command_line=opts.command_line or shlex.join(["fgdsr", *sys.argv[1:]]), **tune_kw,
    ))  # fmt: skip
    backend, why = choose_backend(opts.backend)
    datasets = tuple(opts.eval_datasets or pcfg.eval_datasets)
    return PipelinePlan(sweep, out, datasets, backend, why, dict(pcfg.bench), pcfg.crop,
                        _selection(sweep.base, datasets), opts)  # fmt: skip


# ------------------------------------------------------------------------------- calls into trt/


def choose_backend(requested: str) -> tuple[str, str]:
    """-> (backend, why): trt.backends' one backend choice (auto: TensorRT with a GPU, else ONNX Runtime)."""
    from trt.backends import choose_backend as choose

    return choose(requested)


def export_models(dirs: dict[str, str], out: Path, precision: str = "fp32") -> dict[str, str]:
    """ONNX export of each checkpoint (`variant -> dir`) into `<out>/models/<variant>.onnx` (+ sidecar)."""
    from trt.export import export_source
    from trt.sources import Source

    res = {}
    for variant, d in dirs.items():
        path = out / "models" / f"{variant}.onnx"
        export_source(Source("checkpoint", Path(d), str(d)), path, precision=precision)
        res[variant] = str(path)
    return res


def complexity_rows(dirs: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Params, kernel weights, Mult-Adds (true, naive; HR 1280×720) of each checkpoint (trt.complexity)."""
    from trt.complexity import complexity

    out = {}
    for variant, d in dirs.items():
        c = complexity(str(d))  # HR 1280x720 (trt.complexity.DEFAULT_HR)
        out[variant] = {**c.record(), "mult_adds_true": c.counts.mult_adds_true,
                        "mult_adds_naive": c.counts.mult_adds_naive}  # fmt: skip
    return out


def benchmark(plan: PipelinePlan, sources: dict[str, str], backend: str) -> tuple[dict[str, Any], str, str]:
    """trt.bench: the FGD model (candidate) against the l1 model (baseline) -> (its JSON, method line, table)."""
    from trt.backends import choose_device
    from trt.bench import BenchmarkPlan, run_benchmark
    from trt.fmt import md_table
    from trt.report import COLUMNS, method_line, table_rows, write_report
    from trt.shapes import Size, parse_size
    from trt.timing import TimingPlan

    b = plan.bench
    hr = b.get("hr_size", "1280x720")
    hr_size = (
        parse_size(hr, "benchmark.hr_size")
        if isinstance(hr, str)
        else Size(height=int(hr[1]), width=int(hr[0]))
    )
    timing = TimingPlan(warmup_ms=float(b.get("warmup_ms", 200.0)), min_iters=int(b.get("min_iters", 200)),
                        min_seconds=float(b.get("min_time_s", 3.0)))  # fmt: skip
    base_src, cand_src = sources.values()
    result = run_benchmark(BenchmarkPlan(
        base_src, cand_src, backend=backend, precision=str(b.get("precision", "fp32")), scale=plan.scale,
        hr_size=hr_size, batch=int(b.get("batch", 1)), dataset=plan.eval_datasets[0], data_root=plan.data_root,
        device=choose_device(backend), timing=timing, tolerance=float(b.get("tolerance", 0.03)),
        processes=int(b.get("processes", 5)), workdir=str(plan.out / "models"),
    ))  # fmt: skip
    write_report(result, plan.out / "benchmark")
    return result.to_dict(), method_line(result), md_table(COLUMNS, table_rows(result))


def machine() -> str:
    """This machine in one line (trt.machine: host, CPU, cores, load, GPU, libraries, date)."""
    import torch

    from trt.machine import describe_machine

    return describe_machine("cuda" if torch.cuda.is_available() else "cpu").line()


# ---------------------------------------------------------------------------------------------- stages


def tune_stage(plan: PipelinePlan, bars) -> SweepResult:
    from orchestrator.progress import sweep_bars
    from orchestrator.tune import run_sweep

    with sweep_bars(bars, plan.sweep):
        return run_sweep(plan.sweep)


def select_stage(sweep: SweepResult) -> Comparison:
    """The best finished l1 trial and the best finished FGD trial (`SweepResult.best`); one line if missing."""
    if sweep.partial:
        raise UserError(
            "pipeline: the sweep was interrupted before every trial finished, so there is no honest 'best'; "
            f"finish it with fgdsr tune --resume --out {sweep.plan.out} --name {sweep.plan.name}"
        )
    base = sweep.best("l1")
    fgd = sweep.best([v for v in sweep.variants() if v != "l1"])
    if base is None or base.exported is None:
        raise UserError("pipeline: no l1 baseline trial finished (see the trials table in the sweep); rerun")
    if fgd is None or fgd.exported is None:
        raise UserError("pipeline: no FGD trial (cs/fd/aux) finished; put a loss choice with an FGD variant in "
                        "the search space")  # fmt: skip
    return Comparison(base, fgd)


def deploy_stage(plan: PipelinePlan, comparison: Comparison, console) -> Deployment:
    """Export both models to ONNX (falling back to torch if the export is refused), count, benchmark."""
    dirs = comparison.dirs()
    backend, why = plan.backend, plan.backend_reason
    try:
        onnx = export_models(dirs, plan.out, precision=str(plan.bench.get("precision", "fp32")))
    except UserError as e:
        if backend == "torch":
            raise
        # A failed export (e.g. the ONNX Runtime parity check) must not hide the rest of the job: say so
        # loudly in the report and benchmark the checkpoints on torch instead.
        onnx, backend, why = {}, "torch", f"ONNX export failed ({e}); fell back to torch"
        console.print(f"warning: {why}", markup=False, style="yellow")
    comp = complexity_rows(dirs)
    # onnxruntime runs the .onnx; tensorrt builds engines from it into <out>/models; torch the checkpoints
    result, method, table = benchmark(plan, dirs if backend == "torch" else onnx, backend)
    return Deployment(backend, why, onnx, comp, result, method, table)


def make_upscalers(dirs: dict[str, str], scale: int, device: str = "cpu") -> dict[str, Any]:
    """method -> upscaler (LR RGB -> SR RGB uint8): bicubic, and each variant's checkpoint through torch."""
    from fgdsr.checkpoint import load_model
    from fgdsr.inference import BicubicUpscaler, ModelUpscaler

    ups: dict[str, Any] = {"bicubic": BicubicUpscaler(scale)}
    for variant, d in dirs.items():
        model, _cfg, _meta = load_model(d)
        ups[variant] = ModelUpscaler(model.eval(), scale, device)
    return ups


def per_image(result: dict[str, Any], baseline: str, fgd: str) -> tuple[dict[str, Any], ...]:
    """fgdsr.evaluate's results joined per image: dataset, name, entropy, psnr/ssim {method}, delta (dB)."""
    images: dict[tuple[str, str], dict[str, Any]] = {}
    for r in result["results"]:
        for im in r.get("images", []):
            row = images.setdefault((r["dataset"], im["name"]),
                                    {"dataset": r["dataset"], "name": im["name"], "psnr": {}, "ssim": {}})  # fmt: skip
            row["entropy"] = im.get("entropy", row.get("entropy"))
            row["psnr"][r["method"]], row["ssim"][r["method"]] = im["psnr"], im["ssim"]
    return tuple(dict(r, delta=r["psnr"][fgd] - r["psnr"][baseline]) for r in images.values()
                 if fgd in r["psnr"] and baseline in r["psnr"])  # fmt: skip


def evaluate_stage(plan: PipelinePlan, comparison: Comparison, deployment: Deployment):
    """bicubic and both variants on the report's data sets -> (Evaluation, the upscalers for the figures)."""
    import torch

    from fgdsr.evaluate import evaluate
    from orchestrator.pipeline_report import table2_rows

    ups = make_upscalers(comparison.dirs(), plan.scale, "cuda" if torch.cuda.is_available() else "cpu")
    result = evaluate(ups, list(plan.eval_datasets), [plan.scale], plan.data_root)
    datasets = tuple(dict.fromkeys(r["dataset"] for r in result["results"]))  # a folder path -> its name
    base, fgd = comparison.variants
    t2 = table2_rows(result, deployment.complexity, datasets, plan.scale, comparison.variants)
    by = {r["variant"]: r["sets"] for r in t2}
    delta = {ds: by[fgd][ds]["psnr"] - by[base][ds]["psnr"] if by[fgd].get(ds) and by[base].get(ds) else None
             for ds in datasets}  # fmt: skip
    return Evaluation(datasets, result, per_image(result, base, fgd), tuple(t2), delta), ups


def _hr_and_lr(dataset: str, name: str, scale: int, data_root: str | None):
    """(HR modcropped uint8 (H, W, 3), its protocol LR, gray source?) exactly as `fgdsr.evaluate` makes them."""
    from fgdsr.data.datasets import resolve_dataset
    from fgdsr.evaluate import lr_image

    ds = resolve_dataset(dataset, data_root)
    i = ds.names.index(name)
    hr, lr = lr_image(ds, i, scale)
    return hr, lr, ds.is_gray(i)


def _crop_row(title: str, im: dict[str, Any], sign: float, ups: dict[str, Any], plan: PipelinePlan,
              labels: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    """One Fig. 5 row: HR / bicubic / baseline / FGD crops where FGD's squared error differs most (by `sign`)."""
    from fgdsr.metrics.protocol import evaluate_pair, y_channel

    base, fgd = list(labels)[1:]
    hr, lr, gray = _hr_and_lr(im["dataset"], im["name"], plan.scale, plan.data_root)
    srs = {m: ups[m](lr) for m in labels}
    y_hr = y_channel(hr, gray)
    err = {m: (y_channel(srs[m], gray) - y_hr) ** 2 for m in (base, fgd)}
    y0, x0, s = figures.best_crop_box(err[base], err[fgd], plan.crop, sign)
    crops, psnr = {"HR": hr[y0 : y0 + s, x0 : x0 + s]}, {"HR": None}
    for m, label in labels.items():
        crops[label] = srs[m][y0 : y0 + s, x0 : x0 + s]
        psnr[label] = evaluate_pair(srs[m], hr, plan.scale, gray=gray)[0]  # whole image, the protocol's PSNR
    return {"title": f"{title}: {im['dataset']}/{im['name']} ({im['delta']:+.2f} dB)", "crops": crops,
            "psnr": psnr, "image": im["name"], "dataset": im["dataset"], "delta": im["delta"], "box": [y0, x0, s]}  # fmt: skip


def fig5_rows(
    images, ups: dict[str, Any], plan: PipelinePlan, variants: tuple[str, str]
) -> list[dict[str, Any]]:
    """Crops for the images with the largest and smallest ΔPSNR: the window where FGD gains (resp. loses) most."""
    if not images:
        return []
    ranked = sorted(images, key=lambda r: r["delta"])
    picks = [("largest ΔPSNR", ranked[-1], 1.0)] + (
        [("smallest ΔPSNR", ranked[0], -1.0)] if len(ranked) > 1 else []
    )
    labels = {"bicubic": "bicubic", variants[0]: f"baseline ({variants[0]})", variants[1]: "FGD"}
    return [_crop_row(title, im, sign, ups, plan, labels) for title, im, sign in picks]


def figures_stage(plan: PipelinePlan, sweep: SweepResult, ev: Evaluation, ups, variants) -> FigureData:
    """PSNR vs step of every trial, the paper's Fig. 1 (entropy vs ΔPSNR) and Fig. 5 (crops)."""
    from orchestrator import tracking

    fig_dir = plan.out / "figures"
    histories = {f"{t.label} ({t.trial_id})": tracking.metric_history(sweep.tracking_uri, t.mlflow_run_id, "val_psnr")
                 for t in sweep.trials if t.mlflow_run_id}  # fmt: skip
    figures.plot_psnr_vs_step(histories, fig_dir / "psnr_vs_step.png")
    base, fgd = variants
    fits = figures.plot_entropy_analysis(
        [i["entropy"] for i in ev.images], [i["psnr"][base] for i in ev.images],
        [i["psnr"][fgd] for i in ev.images], fig_dir / "fig1_entropy.png",
    )  # fmt: skip
    f5 = fig5_rows(ev.images, ups, plan, variants)
    figures.crop_grid(f5, fig_dir / "fig5_crops.png")
    if sweep.analysis.get("figure"):  # the sweep's parallel coordinates, next to the report's other figures
        shutil.copyfile(sweep.analysis["figure"], fig_dir / "parallel_coordinates.png")
    return FigureData(histories, fits, tuple({k: v for k, v in r.items() if k != "crops"} for r in f5))


def summarise(plan: PipelinePlan, sweep: SweepResult, comparison: Comparison, deployment: Deployment,
              ev: Evaluation, figs: FigureData, t0: float) -> PipelineSummary:  # fmt: skip
    from orchestrator import tracking
    from orchestrator.pipeline_report import below_bicubic

    opts, base = plan.options, plan.sweep.base
    cpu_toy = deployment.benchmark["method"].get("device", "cpu") == "cpu" and base.max_steps < 5000
    job = JobInfo(
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine=machine(),
        command=plan.sweep.command_line, config=opts.config.source, out=str(plan.out), scale=plan.scale,
        data_root=plan.data_root,
        ui_command="fgdsr ui" + ("" if opts.tracking_uri is None else f" --tracking-uri {sweep.tracking_uri}"),
        ui_url=tracking.ui_url(sweep.tracking_uri, sweep.experiment_id),
        note="CPU demo at toy size (a small LapSRN, a few hundred steps on built-in photos): it shows the machinery "
        "working end to end; its PSNR differences are not evidence about the FGD loss." if cpu_toy else "",
    )  # fmt: skip
    return PipelineSummary(job, sweep, comparison, plan.selection, deployment, ev, figs,
                           below_bicubic(ev.table2, ev.datasets, base.max_steps), time.perf_counter() - t0)  # fmt: skip


def run_pipeline(opts: PipelineOptions) -> PipelineSummary:
    """plan → tune → select → deploy → evaluate → figures → summary → render; returns the summary."""
    from rich.console import Console

    from orchestrator.logs import library_output
    from orchestrator.pipeline_report import announce, render_outputs, terminal_summary
    from orchestrator.progress import progress_bars
    from orchestrator.tune import preflight

    t0 = time.perf_counter()
    console = Console(file=sys.stdout, quiet=opts.quiet)  # bound now: inside library_output stdout is the log
    plan = make_pipeline_plan(opts)
    preflight(plan.sweep)
    announce(plan, console)
    with library_output(plan.out / "fgdsr.log", opts.verbose), progress_bars(console) as bars:
        stages = bars.add_task("pipeline", total=6)

        def step(what: str) -> None:
            bars.update(stages, advance=1, description=f"pipeline: {what}")

        sweep = tune_stage(plan, bars)
        comparison = select_stage(sweep)
        step("export ONNX, benchmark")
        deployment = deploy_stage(plan, comparison, console)
        step("evaluate bicubic, baseline, FGD")
        ev, ups = evaluate_stage(plan, comparison, deployment)
        step("figures")
        figs = figures_stage(plan, sweep, ev, ups, comparison.variants)
        step("report + MLflow")
        summary = render_outputs(summarise(plan, sweep, comparison, deployment, ev, figs, t0))
        bars.update(stages, completed=6, description="pipeline: done")
    terminal_summary(summary, console)
    return summary
