"""Number formatting and Markdown tables: the one formatter of the project's reports (no heavy imports).

Same signatures as the orchestrator's report helpers (`fmt`, `fmt_count`, `fmt_gmac`, `fmt_signed`, `md_table`),
so every table prints a number the same way; `fmt_ratio` and `fmt_spec` are the benchmark's extras.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

MISSING = "—"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt(value: Any, digits: int = 2) -> str:
    """A table cell: floats with `digits` decimals, None/NaN as an em dash, anything else as str()."""
    if _missing(value):
        return MISSING
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_spec(value: Any, spec: str = "") -> str:
    """`format(value, spec)` (str() without a spec), None/NaN as an em dash; e.g. fmt_spec(2e-3, '.1e')."""
    if _missing(value):
        return MISSING
    if isinstance(value, float) and not spec:
        return f"{value:.3g}"
    return format(value, spec) if spec else str(value)


def fmt_count(n: int | float | None) -> str:
    """57184 -> '57.2 K', 814242 -> '814.2 K', 1.2e6 -> '1.20 M' (the paper prints params in K)."""
    if _missing(n):
        return MISSING
    if n >= 1e6:
        return f"{n / 1e6:.2f} M"
    return f"{n / 1e3:.1f} K"


def fmt_gmac(n: int | float | None) -> str:
    """Mult-Adds in G (1e9), two decimals: 52.70 G."""
    return MISSING if _missing(n) else f"{n / 1e9:.2f} G"


def fmt_signed(value: float | None, digits: int = 2) -> str:
    """A difference with its sign: +0.12, -0.03."""
    if _missing(value):
        return MISSING
    return f"{value:+.{digits}f}"


def fmt_ratio(a: float | None, b: float | None, digits: int = 3) -> str:
    """a / b with `digits` decimals; an em dash when either is unknown or b is 0."""
    if _missing(a) or _missing(b) or b == 0:
        return MISSING
    return f"{a / b:.{digits}f}"


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub Markdown table; non-string cells are formatted with `fmt`, '|' inside a cell becomes '/'."""

    def cell(c: Any) -> str:
        return (c if isinstance(c, str) else fmt(c)).replace("|", "/")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
