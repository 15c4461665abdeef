"""The benchmark's outputs: a rich table, the Markdown report + bar chart PNG, and an MLflow run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fgdsr.atomic import save_figure_atomic
from trt.sidecar import write_bytes_atomic, write_json_atomic


def _fmt(v: Any, spec: str = "") -> str:
    if v is None:
        return "-"
    return format(v, spec) if spec else str(v)


def _g(v: int | None) -> str:
    """Mult-Adds in G (1e9), or M (1e6) below 1 G."""
    if v is None:
        return "-"
    return f"{v / 1e9:.2f}G" if v >= 1e9 else f"{v / 1e6:.2f}M"


def _k(v: int | None) -> str:
    return "-" if v is None else f"{v / 1e3:.1f}K"


COLUMNS = ("quantity", "baseline", "candidate", "candidate / baseline")


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:.3f}"


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    """One row per quantity: [name, baseline, candidate, ratio] (a transposed table fits 80 columns)."""
    base, cand = result["rows"]
    lat = result["latency_interval"]
    gpu = base.get("device", "cpu") != "cpu"

    def row(name: str, key, fmt, ratio: bool = True) -> list[str]:
        a, b = key(base), key(cand)
        return [name, fmt(a), fmt(b), _ratio(b, a) if ratio else ""]

    num = lambda spec: lambda v: _fmt(v, spec)  # noqa: E731
    rows = [
        row("variant", lambda r: r.get("variant", "?"), str, False),
        row("backend, precision", lambda r: f"{r['backend']} {r['precision']}", str, False),
        row("params", lambda r: r["params"], _k),
        row("weights (kernels)", lambda r: r["weights"], _k),
        row("Mult-Adds (true)", lambda r: r["mult_adds"], _g),
        row("Mult-Adds (naive)", lambda r: r.get("mult_adds_naive"), _g),
        ["latency median ms", _fmt(base["latency_ms"]["median"], ".2f"), _fmt(cand["latency_ms"]["median"], ".2f"),
         f"{lat['ratio']:.3f} [{lat['low']:.3f}, {lat['high']:.3f}]"],
        row("latency p90 ms", lambda r: r["latency_ms"]["p90"], num(".2f")),
        row("latency p99 ms", lambda r: r["latency_ms"]["p99"], num(".2f")),
    ]  # fmt: skip
    if gpu:
        rows.append(
            row("GPU compute median ms", lambda r: (r.get("compute_ms") or {}).get("median"), num(".2f"))
        )
    rows += [
        row("throughput img/s", lambda r: r.get("throughput_ips"), num(".2f")),
        row("peak memory MiB", lambda r: r.get("peak_memory_mb"), num(".1f")),
        row(f"PSNR dB ({result['method'].get('dataset') or '-'})", lambda r: r["psnr"], num(".2f"), False),
        row("SSIM", lambda r: r.get("ssim"), num(".4f"), False),
    ]
    return rows


def method_line(result: dict[str, Any]) -> str:
    m, mach = result["method"], result["machine"]
    where = mach.get("gpu") or f"{mach['cpu']}, {m['threads']} threads"
    return (f"{m['backend']} {m['precision']} on {where}; LR input {m['lr_input']} for HR "
            f"{m['hr_size'][0]}x{m['hr_size'][1]} x{m['scale']}; interleaved rounds "
            f"{result['latency_interval']['rounds']}, {result['rows'][0]['iterations']} timed iterations per model")  # fmt: skip


def print_table(result: dict[str, Any], console=None) -> None:
    """The rich table, the method line and the verdict on the terminal."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title="fgdsr benchmark: candidate vs baseline", caption=method_line(result))
    for col in COLUMNS:
        table.add_column(col, justify="left" if col == "quantity" else "right")
    for cells in table_rows(result):
        table.add_row(*cells)
    console.print(table)
    style = "green" if result["no_extra_cost"] else "yellow"
    console.print(f"[{style}]verdict: {result['verdict']}[/{style}]")


def markdown(result: dict[str, Any], chart: str | None = None) -> str:
    """The report as Markdown (table, method, verdict, machine; the chart linked when given)."""
    lines = ["# fgdsr benchmark", "", f"**Verdict:** {result['verdict']}", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]  # fmt: skip
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in table_rows(result)]
    lat = result["latency_interval"]
    lines += ["", f"Method: {method_line(result)}.",
              f"Latency = end-to-end median (GPU: with pinned host<->device copies; CPU: wall clock). The ratio's "
              f"95 % interval comes from a paired bootstrap over the {lat['rounds']} interleaved rounds "
              f"(per-round ratio IQR {lat['round_iqr']:.3f}); 'no extra inference cost' needs its upper end "
              f"<= 1 + {result['tolerance']:.0%}.", "",
              "Machine: " + ", ".join(f"{k} {v}" for k, v in result["machine"].items()), ""]  # fmt: skip
    if chart:
        lines += [f"![latency and complexity]({chart})", ""]
    return "\n".join(lines)


def bar_chart(result: dict[str, Any], path: str | Path) -> Path:
    """PNG: latency (median with p90 whisker), Mult-Adds and params, baseline vs candidate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    names = [f"{r['role']}\n{r.get('variant', '')}" for r in rows]
    colors = ["#7f7f7f", "#1f77b4"]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
    med = [r["latency_ms"]["median"] for r in rows]
    err = [[0] * len(rows), [r["latency_ms"]["p90"] - r["latency_ms"]["median"] for r in rows]]
    axes[0].bar(names, med, yerr=err, color=colors, capsize=4)
    axes[0].set_ylabel("latency ms (median, p90)")
    axes[1].bar(names, [r["mult_adds"] / 1e9 for r in rows], color=colors)
    axes[1].set_ylabel("Mult-Adds (G, true)")
    axes[2].bar(names, [r["params"] / 1e3 for r in rows], color=colors)
    axes[2].set_ylabel("params (K)")
    fig.suptitle(
        f"{result['method']['backend']} {result['method']['precision']}: latency x{result['ratios']['latency']:.3f}"
    )
    fig.tight_layout()
    return save_figure_atomic(fig, path, dpi=120)


def write_report(result: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """`out_dir`/benchmark.md, benchmark.png, benchmark.json (each written atomically)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = bar_chart(result, out_dir / "benchmark.png")
    md = write_bytes_atomic(out_dir / "benchmark.md", markdown(result, png.name).encode())
    js = write_json_atomic(out_dir / "benchmark.json", result)
    return {"markdown": md, "chart": png, "json": js}


def log_mlflow(result: dict[str, Any], tracking_uri: str, experiment: str = "fgdsr-benchmark") -> str:
    """Log the benchmark as its own MLflow run (params, metrics, the JSON and report); -> run id."""
    import tempfile

    try:
        import mlflow
    except ImportError:
        from fgdsr.errors import UserError

        raise UserError("--tracking-uri: mlflow is not installed; pip install 'fgdsr[track]'") from None
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    m = result["method"]
    with mlflow.start_run(run_name=f"benchmark-{m['backend']}-{m['precision']}") as run:
        mlflow.log_params({k: v for k, v in m.items() if not isinstance(v, list | dict)})
        for r in result["rows"]:
            mlflow.set_tag(f"{r['role']}_source", r.get("source", ""))
            for key in ("params", "weights", "mult_adds", "psnr", "ssim", "throughput_ips", "peak_memory_mb"):
                if r.get(key) is not None:
                    mlflow.log_metric(f"{r['role']}_{key}", float(r[key]))
            for key, v in r["latency_ms"].items():
                mlflow.log_metric(f"{r['role']}_latency_{key}_ms", float(v))
        for key, v in result["ratios"].items():
            if v is not None:
                mlflow.log_metric(f"ratio_{key}", float(v))
        mlflow.set_tag("verdict", result["verdict"])
        with tempfile.TemporaryDirectory() as tmp:
            paths = write_report(result, tmp)
            for p in paths.values():
                mlflow.log_artifact(str(p), artifact_path="benchmark")
        return run.info.run_id


def to_json(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2, sort_keys=False)
