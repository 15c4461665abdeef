"""Render a `PipelineSummary`: `report.md`, `pipeline.json`, the terminal verdict, the MLflow parent run.

Every renderer reads the same record, so the numbers in Markdown, JSON, the terminal and MLflow agree.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from orchestrator import report
from orchestrator.pipeline_summary import PipelineSummary

NAMES = {"bicubic": "Bicubic", "baseline": "Baseline (best l1 trial)", "fgd": "FGD (best trial)"}


def table2_rows(evald: dict[str, Any], comp: dict[str, dict[str, Any]], datasets, scale: int,
                variants: tuple[str, str]) -> list[dict[str, Any]]:  # fmt: skip
    """Table-2-style rows (bicubic, baseline, FGD): params, Mult-Adds (HR 1280×720), PSNR/SSIM per set at `scale`."""
    by = {(r["method"], r["dataset"].lower(), r["scale"]): r for r in evald["results"]}
    rows = []
    for variant, name in zip(("bicubic", *variants), NAMES.values(), strict=True):
        c = comp.get(variant) or {}
        row = {"method": name, "variant": variant, "params": c.get("params"), "weights": c.get("weights"),
               "mult_adds_true": c.get("mult_adds_true"), "mult_adds_naive": c.get("mult_adds_naive"), "sets": {}}  # fmt: skip
        for ds in datasets:
            r = by.get((variant, ds.lower(), scale))
            row["sets"][ds] = {"psnr": r["psnr"], "ssim": r["ssim"]} if r else None
        rows.append(row)
    return rows


def below_bicubic(t2, datasets, steps: int) -> str:
    """A plain sentence when a trained model is still below bicubic on some set (else '')."""
    bic, *trained = t2
    worse = [f"{r['variant']} on {ds}" for r in trained for ds in datasets
             if r["sets"].get(ds) and bic["sets"].get(ds) and r["sets"][ds]["psnr"] < bic["sets"][ds]["psnr"]]  # fmt: skip
    if not worse:
        return ""
    verb = "is" if len(worse) == 1 else "are"
    return (f"after {steps} training steps, {' and '.join(worse)} {verb} still below bicubic: expected for a tiny model "
            "this early (LapSRN learns its upsampling from scratch); train longer (--max-steps, or --gpus 1 "
            "with a larger --config) before reading anything into the PSNR columns.")  # fmt: skip


# ---------------------------------------------------------------------------------------------- report.md


def _header(s: PipelineSummary) -> list[str]:
    j, sw = s.job, s.sweep
    parts = [
        "# fgdsr pipeline report",
        f"Run {j.date} on {j.machine} in {s.wall_s:.0f} s. Command: `{j.command}`. Config: `{j.config}`. MLflow: "
        f"`{sw.tracking_uri}`, experiment `{sw.plan.experiment}`, sweep parent run `{sw.parent_run_id}` (every "
        f"artefact below is attached to it under `pipeline/`; open with `{j.ui_command}`, then {j.ui_url}).",
    ]
    return parts + ([f"> {j.note}"] if j.note else [])


def _verdict(s: PipelineSummary) -> list[str]:
    b, f = s.comparison.baseline, s.comparison.best_fgd
    gains = "; ".join(f"{ds} ×{s.job.scale}: FGD − baseline = {report.fmt_signed(s.evaluation.delta_by_set.get(ds))} dB"
                      for ds in s.evaluation.datasets)  # fmt: skip
    return [
        "## Verdict",
        f"- Best baseline: trial `{b.trial_id}` (l1), validation PSNR {b.best_val_psnr:.2f} dB; best FGD: trial "
        f"`{f.trial_id}` ({f.variant}), validation PSNR {f.best_val_psnr:.2f} dB.",
        f"- {gains}",
        *([f"- Note: {s.below_bicubic}"] if s.below_bicubic else []),
        f"- Deployment ({s.deployment.backend}, chosen because: {s.deployment.reason}): "
        f"{s.deployment.benchmark['verdict']}.",
    ]


def _selection_text(s: PipelineSummary) -> str:
    sel, plan = s.selection, s.sweep.plan
    counts = {v: sum(t.variant == v for t in s.sweep.trials) for v in s.sweep.variants()}
    fair = (f"Each variant ran {' / '.join(f'{n} ({v})' for v, n in counts.items())} trials on the same sampled settings "
            f"({plan.num_samples // max(1, len(counts))} slots: lr, batch size, … drawn once per slot, only the loss "
            "differs).") if plan.points else ""  # fmt: skip
    where = (f"The best trials were selected on `{sel.val_dataset}` ({', '.join(sel.val_images)}); the report scores "
             f"{', '.join(f'`{d}`' for d in sel.eval_datasets)} ({', '.join(sel.eval_images)}); ")  # fmt: skip
    overlap = ("no image is in both." if not sel.overlap else
               f"**{len(sel.overlap)} image(s) in both ({', '.join(sel.overlap)}): the selected trials are scored on "
               "images that chose them (optimistic).**")  # fmt: skip
    return " ".join(p for p in (fair, where + overlap) if p)


def _trials(s: PipelineSummary) -> list[str]:
    parts = [
        "## Trials",
        _selection_text(s),
        report.md_table(*report.trials_table(s.sweep.trials)),
        "PSNR/SSIM: the best validation values of each trial (validation set of the training config). "
        "Validation PSNR of every trial against the step:",
        "![PSNR vs step](figures/psnr_vs_step.png)",
    ]
    a = s.sweep.analysis
    if a.get("importances"):
        parts += [f"Hyperparameter importances for the best validation PSNR ({a['note']}): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in a["importances"]) + "."]  # fmt: skip
    if a.get("figure"):
        parts.append("![parallel coordinates](figures/parallel_coordinates.png)")
    return parts


def _table2(s: PipelineSummary) -> list[str]:
    scale, datasets = s.job.scale, s.evaluation.datasets
    headers = ["method", "params (weights)", "Mult-Adds true / naive"] + [
        f"{ds} PSNR/SSIM" for ds in datasets
    ]
    rows = []
    for r in s.evaluation.table2:
        ma = ("—" if r["mult_adds_true"] is None
              else f"{report.fmt_gmac(r['mult_adds_true'])} / {report.fmt_gmac(r['mult_adds_naive'])}")  # fmt: skip
        cells = [r["method"], report.fmt_count(r["weights"]), ma]
        cells += ["—" if r["sets"].get(ds) is None else f"{r['sets'][ds]['psnr']:.2f} / {r['sets'][ds]['ssim']:.4f}"
                  for ds in datasets]  # fmt: skip
        rows.append(cells)
    return [
        f"## Table 2 style (×{scale}, the literature's protocol: Y channel, shave {scale})",
        report.md_table(headers, rows),
        "Params = kernel weights (the paper's convention); Mult-Adds for an HR output of 1280×720.",
    ]


def _benchmark(s: PipelineSummary) -> list[str]:
    d = s.deployment
    models = ", ".join(f"`models/{Path(v).name}`" for v in d.onnx.values()) or "none"
    return [
        f"## Benchmark: candidate (FGD) vs baseline on {d.backend}",
        f"Backend `{d.backend}`: {d.reason}. ONNX models: {models}.",
        d.table,
        f"**Verdict:** {d.benchmark['verdict']}. Method: {d.method}. Full report: "
        "[benchmark/benchmark.md](benchmark/benchmark.md).",
        *_small_model_note(d),
        "![benchmark](benchmark/benchmark.png)",
    ]


def _small_model_note(d) -> list[str]:
    """FD's extras are fixed in size (the Class-Module, ~56 K params): next to a small trunk they dominate."""
    base, cand = d.complexity.get("l1"), next((v for k, v in d.complexity.items() if k != "l1"), None)
    if not base or not cand or not base.get("params") or cand["params"] / base["params"] <= 1.2:
        return []
    ratio = cand["params"] / base["params"]
    return [f"This model is small: FD's fixed extras make its params ×{ratio:.2f} of the baseline's, so this verdict "
            "is about this model. For the full-size LapSRN ×4 they are ×1.07 and the latency ratio is in "
            "docs/BENCHMARKS.md."]  # fmt: skip


def _fig1(s: PipelineSummary) -> list[str]:
    fits = s.figures.fig1
    base, fgd = s.comparison.variants
    text = (f"Linear trends over {fits['delta']['n']} images: baseline PSNR {report.fmt_signed(fits['baseline']['slope'])} "
            f"dB/bit, FGD PSNR {report.fmt_signed(fits['fgd']['slope'])} dB/bit, ΔPSNR "
            f"{report.fmt_signed(fits['delta']['slope'], 3)} dB/bit (Pearson r = {report.fmt(fits['delta']['r'])}). "
            "The paper claims FGD's gain grows with entropy (a positive ΔPSNR slope)"
            + ("; with this few images the fit is only indicative." if fits["delta"]["n"] < 20 else "."))  # fmt: skip
    rows = [[r["dataset"], r["name"], f"{r['entropy']:.3f}", f"{r['psnr'].get('bicubic', float('nan')):.2f}",
             f"{r['psnr'][base]:.2f}", f"{r['psnr'][fgd]:.2f}", report.fmt_signed(r["delta"])]
            for r in sorted(s.evaluation.images, key=lambda r: r["entropy"])]  # fmt: skip
    return [
        "## Fig. 1 analysis: image entropy vs PSNR and vs ΔPSNR",
        text,
        "![Fig. 1](figures/fig1_entropy.png)",
        report.md_table(["set", "image", "entropy (bits)", "bicubic", "baseline", "FGD", "Δ"], rows),
    ]


def _fig5(s: PipelineSummary) -> list[str]:
    parts = ["## Fig. 5 analysis: crops with the largest and smallest ΔPSNR"]
    for r in s.figures.fig5:
        parts.append(f"- {r['title']}: crop {r['box'][2]}×{r['box'][2]} at (y={r['box'][0]}, x={r['box'][1]}), "
                     "the window where FGD's squared error differs most from the baseline's.")  # fmt: skip
    return parts + ["![Fig. 5](figures/fig5_crops.png)"]


def render_report(s: PipelineSummary) -> str:
    """The pipeline's report.md."""
    sections = (_header, _verdict, _trials, _table2, _benchmark, _fig1, _fig5)
    return "\n\n".join(p for section in sections for p in section(s)) + "\n"


# ----------------------------------------------------------------------------------------- terminal


def announce(plan, console) -> None:
    """The job's first lines: where it writes, what it runs, where the library logs go."""
    from rich.markup import escape

    sw = plan.sweep
    logs = "the terminal (--verbose)" if plan.options.verbose else str(plan.out / "fgdsr.log")
    console.print(f"[bold]fgdsr pipeline[/bold] → {escape(str(plan.out))}")
    console.print(f"  sweep '{sw.name}': {sw.trials} trials × {sw.base.max_steps} steps "
                  f"({sw.search}, {sw.scheduler}, {sw.resources.concurrency} at once); "
                  f"eval on {', '.join(plan.eval_datasets)}; backend {plan.backend} ({plan.backend_reason}); "
                  f"library logs: {logs}", markup=False)  # fmt: skip


def terminal_summary(s: PipelineSummary, console) -> None:
    """The verdict table on the terminal: per method PSNR per set, params, latency; then the verdict line."""
    from rich.markup import escape
    from rich.table import Table

    d, ev = s.deployment, s.evaluation
    t = Table(title=f"fgdsr pipeline: best FGD vs best baseline (×{s.job.scale}, {d.backend})")
    t.add_column("method")
    t.add_column("params")
    for ds in ev.datasets:
        t.add_column(f"{ds} PSNR/SSIM", justify="right")
    t.add_column("latency ms (median)", justify="right")
    lat = {r["role"]: r["latency_ms"]["median"] for r in d.benchmark["rows"]}
    roles = dict(zip(s.comparison.variants, ("baseline", "candidate"), strict=True))  # trt.bench's two roles
    for r in ev.table2:
        cells = [r["method"], report.fmt_count(r["weights"])]
        cells += ["—" if r["sets"].get(ds) is None else f"{r['sets'][ds]['psnr']:.2f} / {r['sets'][ds]['ssim']:.4f}"
                  for ds in ev.datasets]  # fmt: skip
        role = roles.get(r["variant"])
        cells.append(report.fmt(lat.get(role), 2) if role else "—")
        t.add_row(*cells)
    console.print(t)
    style = "green" if d.benchmark.get("no_extra_cost") else "yellow"
    console.print(f"[{style}]verdict: {escape(d.benchmark['verdict'])}[/{style}]")
    gains = ", ".join(f"{ds} {report.fmt_signed(ev.delta_by_set.get(ds))} dB" for ds in ev.datasets)
    console.print(f"FGD − baseline PSNR: {gains}", markup=False)
    if s.below_bicubic:
        console.print(f"note: {s.below_bicubic}", markup=False, style="yellow")
    out = Path(s.job.out)
    console.print(
        f"report: {out / 'report.md'}  (figures in {out / 'figures'}; {s.wall_s:.0f} s)", markup=False
    )
    console.print(f"MLflow: parent run {s.sweep.parent_run_id} in experiment '{s.sweep.plan.experiment}' "
                  f"({s.sweep.tracking_uri}); open the UI with `{s.job.ui_command}`, then {s.job.ui_url}",
                  markup=False)  # fmt: skip


# ------------------------------------------------------------------------------------------- outputs


def mlflow_metrics(s: PipelineSummary) -> dict[str, float]:
    """The numbers the parent run carries: PSNR/SSIM per method and set, the latency ratio."""
    metrics = {"pipeline_latency_ratio": s.deployment.benchmark["ratios"]["latency"]}
    for r in s.evaluation.table2:
        for ds, v in r["sets"].items():
            if v is not None:
                metrics[f"pipeline_{r['variant']}_{ds}_psnr"] = v["psnr"]
                metrics[f"pipeline_{r['variant']}_{ds}_ssim"] = v["ssim"]
    return {k: v for k, v in metrics.items() if v is not None and not math.isnan(v)}


def render_outputs(s: PipelineSummary) -> PipelineSummary:
    """report.md and pipeline.json (written once), then everything attached to the sweep's parent run."""
    import dataclasses

    from orchestrator import tracking

    out = Path(s.job.out)
    files = [out / "report.md", out / "pipeline.json"] + [out / d for d in ("figures", "benchmark", "models")
                                                           if (out / d).is_dir()]  # fmt: skip
    listed = [f"pipeline/{f.name}" for f in files if f.suffix] + [
        f"pipeline/{d.name}/{p.name}" for d in files if not d.suffix for p in sorted(d.iterdir()) if p.is_file()]  # fmt: skip
    s = dataclasses.replace(s, mlflow_artifacts=tuple(listed))
    report.write_text_atomic(out / "report.md", render_report(s))
    report.write_text_atomic(out / "pipeline.json", json.dumps(s.to_dict(), indent=2, default=str) + "\n")
    uri, run_id = s.sweep.tracking_uri, s.sweep.parent_run_id
    tracking.log_files(uri, run_id, files, "pipeline")
    tags = {"pipeline.backend": s.deployment.backend, "pipeline.verdict": s.deployment.benchmark["verdict"],
            "pipeline.baseline_trial": s.comparison.baseline.trial_id,
            "pipeline.fgd_trial": s.comparison.best_fgd.trial_id}  # fmt: skip
    tracking.log_batch(
        tracking.client(uri), run_id, metrics=tracking.metric_list(mlflow_metrics(s)), tags=tags
    )
    return s
