"""Markdown and terminal tables for the pipeline and `reproduce` reports (no heavy imports).

Pure formatting: every function takes records or plain rows (what the pipeline measured) and returns text, so
the tables can be tested on hand-made rows and the same numbers appear in Markdown, JSON and MLflow.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from fgdsr.atomic import write_text_atomic  # noqa: F401  (re-exported: pipeline/reproduce use report.write_text_atomic)
from trt.fmt import fmt, fmt_count, fmt_gmac, fmt_signed, md_table  # noqa: F401  (the one formatter, re-exported)


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


def rich_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[str]]):
    """The same table for the terminal (rich)."""
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for h in headers:
        table.add_column(h)
    for row in rows:
        table.add_row(*[c if isinstance(c, str) else fmt(c) for c in row])
    return table
