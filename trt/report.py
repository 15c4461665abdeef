"""Renderers of a `trt.bench.BenchmarkResult`: the terminal table, the Markdown report + bar chart PNG, the JSON.

Nothing here measures or talks to MLflow; the numbers are formatted by trt/fmt.py only.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fgdsr.atomic import save_figure_atomic
from trt.fmt import MISSING, fmt, fmt_count, fmt_gmac, fmt_ratio, fmt_spec, md_table
from trt.opprofile import GROUPS
from trt.sidecar import write_bytes_atomic, write_json_atomic

COLUMNS = ("quantity", "baseline", "candidate", "candidate / baseline")


def _row(name: str, a: Any, b: Any, cell, ratio: bool = True) -> list[str]:
    return [name, cell(a), cell(b), fmt_ratio(b, a) if ratio else ""]


def table_rows(result) -> list[list[str]]:
    """One row per quantity: [name, baseline, candidate, ratio] (a transposed table fits 80 columns)."""
    base, cand = result.rows
    lat = result.latency
    gpu = base.device.startswith("cuda")

    def num(digits: int):
        return lambda v: fmt(v, digits)

    rows = [
        _row("variant", base.variant, cand.variant, str, False),
        _row("backend, precision", f"{base.backend} {base.precision}", f"{cand.backend} {cand.precision}", str, False),
        _row("params", base.params, cand.params, fmt_count),
        _row("weights (kernels)", base.weights, cand.weights, fmt_count),
        _row("Mult-Adds (true)", base.mult_adds, cand.mult_adds, fmt_gmac),
        _row("Mult-Adds (naive)", base.mult_adds_naive, cand.mult_adds_naive, fmt_gmac),
        ["latency median ms", fmt(base.latency_ms["median"]), fmt(cand.latency_ms["median"]),
         f"{fmt(lat.ratio, 3)} [{fmt(lat.low, 3)}, {fmt(lat.high, 3)}]"],
        _row("latency p90 ms", base.latency_ms["p90"], cand.latency_ms["p90"], num(2)),
        _row("latency p99 ms", base.latency_ms["p99"], cand.latency_ms["p99"], num(2)),
    ]  # fmt: skip
    if gpu:
        comp = [(r.compute_ms or {}).get("median") for r in result.rows]
        rows += [_row("GPU H2D median ms", base.h2d_ms, cand.h2d_ms, num(3)),
                 _row("GPU compute median ms", comp[0], comp[1], num(3)),
                 _row("GPU D2H median ms", base.d2h_ms, cand.d2h_ms, num(3))]  # fmt: skip
    rows.append(
        _row(
            f"throughput img/s (batch {result.plan.batch})", base.throughput_ips, cand.throughput_ips, num(2)
        )
    )
    if base.throughput_batch_ips is not None:
        rows.append(_row(f"throughput img/s (batch {result.plan.throughput_batch})", base.throughput_batch_ips,
                         cand.throughput_batch_ips, num(2)))  # fmt: skip
    rows += [
        _row("peak memory MiB", base.peak_memory_mb, cand.peak_memory_mb, num(1)),
        _row(f"PSNR dB ({result.plan.dataset or MISSING})", base.psnr, cand.psnr, num(2), False),
        _row("SSIM", base.ssim, cand.ssim, num(4), False),
    ]
    return rows


def method_line(result) -> str:
    """How it was measured, in one line."""
    p, lat, mach = result.plan, result.latency, result.machine
    where = mach.gpu or f"{mach.cpu}, {result.threads} threads"
    return (f"{p.backend} {p.precision} on {where}; LR input {list(p.spec().shape)} for HR {hr_text(result)} "
            f"x{p.scale}; {lat.processes} fresh processes x interleaved rounds = {lat.rounds} rounds, "
            f"{result.rows[0].iterations} timed iterations per model")  # fmt: skip


def hr_text(result) -> str:
    from trt.shapes import hr_of

    return str(hr_of(result.plan.hr_size, result.plan.scale))


def interval_text(result) -> str:
    lat = result.latency
    return (f"Latency = end-to-end median (GPU: with pinned host<->device copies; CPU: wall clock). The ratio's "
            f"{lat.level:.0%} interval is a Student t interval over the trimmed-mean per-round log-ratio of each of the "
            f"{lat.processes} fresh processes (SD between processes {fmt_spec(lat.spread, '.4f')}, of the "
            f"rounds within a process {fmt_spec(lat.round_sd, '.4f')}); 'no extra inference cost' needs the whole "
            f"interval within ±{result.verdict.tolerance:.0%}.")  # fmt: skip


PROFILE_COLUMNS = ("group", "baseline", "candidate", "difference", "candidate, % of its trunk")


def profile_rows(result) -> list[list[str]]:
    """Where the time goes: ms per forward of trunk / FD head / Class-Module per model (profiled separately).

    The last column compares each group with the candidate's own trunk, timed in the same forwards: it does not
    move with the machine's load the way the baseline-vs-candidate difference of two separate profiles does.
    """
    if not result.profiles:
        return []
    base, cand = (p.by_group() for p in result.profiles)
    trunk = cand.get("trunk") or float("nan")
    groups = [*GROUPS, *sorted((set(base) | set(cand)) - set(GROUPS))]
    rows = [[g, fmt(base.get(g, 0.0), 1), fmt(cand.get(g, 0.0), 1), fmt_spec(cand.get(g, 0.0) - base.get(g, 0.0),
             "+.1f"), fmt_spec(100 * cand.get(g, 0.0) / trunk, ".1f")] for g in groups]  # fmt: skip
    tb, tc = (p.total_ms for p in result.profiles)
    rows.append(
        [
            "total (profiled)",
            fmt(tb, 1),
            fmt(tc, 1),
            fmt_spec(tc - tb, "+.1f"),
            fmt_spec(100 * tc / trunk, ".1f"),
        ]
    )
    return rows


def top_ops_rows(result, n: int = 10) -> list[list[str]]:
    """The candidate's costliest operators outside the trunk (what FD adds), ms per forward."""
    if not result.profiles:
        return []
    cand = result.profiles[1]
    ops = [o for o in cand.ops if o.group != "trunk"]
    return [[o.group, o.op, fmt(o.calls, 1), fmt(o.ms, 2)] for o in sorted(ops, key=lambda o: -o.ms)[:n]]


def print_table(result, console=None) -> None:
    """The rich table, the method line, the profile (if any) and the verdict on the terminal."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    for note in result.notes:
        console.print(note, style="yellow", markup=False)
    table = Table(title="fgdsr benchmark: candidate vs baseline", caption=method_line(result))
    for col in COLUMNS:
        table.add_column(col, justify="left" if col == "quantity" else "right")
    for cells in table_rows(result):
        table.add_row(*cells)
    console.print(table)
    if result.profiles:
        prof = Table(title=f"where the time goes ({result.plan.backend} profiler, ms per forward)")
        for col in PROFILE_COLUMNS:
            prof.add_column(col, justify="left" if col == "group" else "right")
        for cells in profile_rows(result):
            prof.add_row(*cells)
        console.print(prof)
    style = "green" if result.verdict.no_extra_cost else "yellow"
    console.print(f"verdict: {result.verdict.text}", style=style, markup=False)


def markdown(result, chart: str | None = None) -> str:
    """The report as Markdown (table, profile, method, verdict, machine; the chart linked when given)."""
    lines = ["# fgdsr benchmark", "", f"**Verdict:** {result.verdict.text}", "", *result.notes,
             md_table(COLUMNS, table_rows(result)), ""]  # fmt: skip
    if result.profiles:
        lines += [f"Where the time goes ({result.plan.backend} profiler, ms per forward, each model profiled "
                  "alone):", "", md_table(PROFILE_COLUMNS, profile_rows(result)),
                  "", "What FD adds (the candidate's costliest operators outside the trunk):", "",
                  md_table(("group", "operator", "calls", "ms"), top_ops_rows(result)), ""]  # fmt: skip
    lines += [
        f"Method: {method_line(result)}.",
        interval_text(result),
        "",
        f"Machine: {result.machine.line()}",
        "",
    ]
    if chart:
        lines += [f"![latency and complexity]({chart})", ""]
    return "\n".join(lines)


def bar_chart(result, path: str | Path) -> Path:
    """PNG: latency (median with p90 whisker), Mult-Adds and params, baseline vs candidate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result.rows
    names = [f"{r.role}\n{r.variant}" for r in rows]
    colors = ["#7f7f7f", "#1f77b4"]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
    med = [r.latency_ms["median"] for r in rows]
    err = [[0] * len(rows), [r.latency_ms["p90"] - r.latency_ms["median"] for r in rows]]
    axes[0].bar(names, med, yerr=err, color=colors, capsize=4)
    axes[0].set_ylabel("latency ms (median, p90)")
    axes[1].bar(names, [r.mult_adds / 1e9 for r in rows], color=colors)
    axes[1].set_ylabel("Mult-Adds (G, true)")
    axes[2].bar(names, [r.params / 1e3 for r in rows], color=colors)
    axes[2].set_ylabel("params (K)")
    fig.suptitle(f"{result.plan.backend} {result.plan.precision}: latency x{result.latency.ratio:.3f}")
    fig.tight_layout()
    return save_figure_atomic(fig, path, dpi=120)


def write_report(result, out_dir: str | Path) -> dict[str, Path]:
    """`out_dir`/benchmark.md, benchmark.png, benchmark.json (each written atomically)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = bar_chart(result, out_dir / "benchmark.png")
    md = write_bytes_atomic(out_dir / "benchmark.md", markdown(result, png.name).encode())
    js = write_json_atomic(out_dir / "benchmark.json", result_dict(result))
    return {"markdown": md, "chart": png, "json": js}


def result_dict(result) -> dict[str, Any]:
    """The JSON schema: rows, ratios, verdict, latency_interval, no_extra_cost, tolerance, method, machine, ..."""
    p = result.plan
    method = {"backend": p.backend, "device": p.device, "precision": p.precision, "scale": p.scale,
              "hr_size": [int(v) for v in _hr_wh(result)], "lr_input": list(p.spec().shape), "batch": p.batch,
              "dataset": p.dataset, "threads": result.threads, "interleaved": True, "processes": p.processes,
              "throughput_batch": p.throughput_batch, **asdict(p.timing)}  # fmt: skip
    out = {"rows": [asdict(r) for r in result.rows], "ratios": result.ratios, "verdict": result.verdict.text,
           "verdict_kind": result.verdict.kind, "latency_interval": result.latency.to_dict(),
           "no_extra_cost": result.verdict.no_extra_cost, "tolerance": result.verdict.tolerance, "method": method,
           "machine": result.machine.to_dict(), "notes": list(result.notes)}  # fmt: skip
    if result.profiles:
        out["profile"] = {prof.label: {"backend": prof.backend, "groups_ms": prof.by_group(),
                                       "ops": [asdict(o) for o in prof.ops]} for prof in result.profiles}  # fmt: skip
    return out


def _hr_wh(result) -> tuple[int, int]:
    from trt.shapes import hr_of

    hr = hr_of(result.plan.hr_size, result.plan.scale)
    return hr.width, hr.height


def to_json(result) -> str:
    return json.dumps(result_dict(result), indent=2, sort_keys=False)
