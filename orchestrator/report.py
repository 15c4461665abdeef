"""Markdown and terminal tables for the pipeline and `reproduce` reports (no heavy imports).

Pure formatting: every function takes records or plain rows (what the pipeline measured) and returns text, so
the tables can be tested on hand-made rows and the same numbers appear in Markdown, JSON and MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from fgdsr.atomic import write_text_atomic  # noqa: F401  (re-exported: pipeline/reproduce use report.write_text_atomic)


def fmt(value: Any, digits: int = 2) -> str:
    """A table cell: floats with `digits` decimals, None/NaN as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        return f"{value:.{digits}f}"
    return str(value)


def fmt_count(n: int | float | None) -> str:
    """57184 -> '57.2 K', 814242 -> '814.2 K', 1.2e6 -> '1.20 M' (the paper prints params in K)."""
    if n is None:
        return "—"
    if n >= 1e6:
        return f"{n / 1e6:.2f} M"
    return f"{n / 1e3:.1f} K"


def fmt_gmac(n: int | float | None) -> str:
    """Mult-Adds in G (1e9), two decimals: 52.70 G."""
    return "—" if n is None else f"{n / 1e9:.2f} G"


def fmt_signed(value: float | None, digits: int = 2) -> str:
    """A difference with its sign: +0.12, -0.03."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:+.{digits}f}"


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub Markdown table; cells are formatted with `fmt`."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in row) + " |")
    return "\n".join(lines)


def trials_table(trials: Sequence[Any]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the trials table (variant, α, β, K, lr, steps, PSNR, SSIM, state).

    `trials`: `orchestrator.trials.TrialSummary` records (α, β, K, lr read from the sampled `config`).
    """
    headers = ["trial", "variant", "α", "β", "K", "lr", "steps", "PSNR (dB)", "SSIM", "state"]
    rows = []
    for t in trials:
        cfg, fgd = t.config, t.variant != "l1"
        lr = _number(cfg.get("lr"))
        rows.append(
            [
                str(t.trial_id),
                str(t.variant),
                fmt(_number(cfg.get("alpha")), 3) if fgd else "—",
                fmt(_number(cfg.get("beta")), 3) if fgd else "—",
                str(cfg.get("bins")) if fgd else "—",
                f"{lr:.1e}" if lr is not None else "—",
                fmt(t.steps),
                fmt(t.best_val_psnr, 2),
                fmt(t.best_val_ssim, 4),
                str(t.state),
            ]
        )
    return headers, rows


def _number(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def benchmark_table(bench: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the issue-5 benchmark JSON (`rows`: baseline, candidate) plus the ratio row."""
    headers = ["role", "backend", "precision", "params", "Mult-Adds", "median ms", "p90 ms", "p99 ms", "PSNR"]
    rows = []
    for r in bench.get("rows", []):
        lat = r.get("latency_ms") or {}
        rows.append(
            [
                str(r.get("role")),
                str(r.get("backend")),
                str(r.get("precision")),
                fmt_count(r.get("params")),
                fmt_gmac(r.get("mult_adds")),
                fmt(lat.get("median"), 3),
                fmt(lat.get("p90"), 3),
                fmt(lat.get("p99"), 3),
                fmt(r.get("psnr"), 2),
            ]
        )
    ratios = bench.get("ratios") or {}
    if ratios:
        rows.append(
            [
                "candidate / baseline",
                "",
                "",
                fmt(ratios.get("params"), 3) + "×",
                fmt(ratios.get("mult_adds"), 3) + "×",
                fmt(ratios.get("latency"), 3) + "×",
                "",
                "",
                "",
            ]
        )
    return headers, rows


def rich_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[str]]):
    """The same table for the terminal (rich)."""
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for h in headers:
        table.add_column(h)
    for row in rows:
        table.add_row(*[c if isinstance(c, str) else fmt(c) for c in row])
    return table
