"""`fgdsr complexity`: params, kernel weights, Mult-Adds (true / naive transposed convs), element-wise work."""

from __future__ import annotations

from typing import Annotated

import typer


def complexity(
    target: Annotated[str, typer.Argument(help="srcnn | vdsr | lapsrn | a checkpoint directory")],
    layout: Annotated[str, typer.Option(help="LapSRN layout: official | port")] = "official",
    loss: Annotated[
        str, typer.Option(help="variant: l1 | cs | fd | aux (its inference graph is counted)")
    ] = "l1",
    scale: Annotated[int | None, typer.Option(help="2, 3, 4 or 8 (default 4; a checkpoint's own)")] = None,
    hr_size: Annotated[str, typer.Option("--hr-size", help="HR output WIDTHxHEIGHT")] = "1280x720",
    convention: Annotated[
        str, typer.Option(help="transposed convs per input position (true) or per output position (naive)")
    ] = "true",
    json_out: Annotated[bool, typer.Option("--json", help="print the JSON record only")] = False,
) -> None:
    """Params, weights and Mult-Adds (the SR literature's convention, HR 1280x720) of a model or checkpoint."""
    import json

    from fgdsr.errors import UserError
    from trt.complexity import complexity as count
    from trt.fmt import fmt_count, fmt_gmac
    from trt.shapes import parse_size

    if layout not in ("official", "port"):
        raise UserError(f"--layout '{layout}': expected official or port")
    if loss not in ("l1", "cs", "fd", "aux"):
        raise UserError(f"--loss '{loss}': expected l1, cs, fd or aux")
    if scale is not None and scale not in (2, 3, 4, 8):
        raise UserError(f"--scale {scale}: expected 2, 3, 4 or 8")
    result = count(target, layout, loss, scale, parse_size(hr_size, "--hr-size"), convention)
    record, prof = result.record(), result.counts
    if json_out:
        typer.echo(json.dumps(record))
        return

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{record['model']} x{record['scale']}, HR {result.hr_size}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column("literature", justify="right")
    table.add_row("params (all trainable values)", f"{prof.params:,}", fmt_count(prof.params))
    table.add_row("weights (kernels only)", f"{prof.weights:,}", fmt_count(prof.weights))
    table.add_row(
        "Mult-Adds, true (convT per input pos.)", f"{prof.mult_adds_true:,}", fmt_gmac(prof.mult_adds_true)
    )
    table.add_row(
        "Mult-Adds, naive (convT per output pos.)",
        f"{prof.mult_adds_naive:,}",
        fmt_gmac(prof.mult_adds_naive),
    )
    table.add_row("element-wise work (elements touched)", f"{prof.elementwise:,}", fmt_gmac(prof.elementwise))
    top = sorted(prof.by_op.items(), key=lambda kv: -kv[1])[:6]
    for name, work in top:
        table.add_row(f"  {name}", f"{work:,}", fmt_gmac(work))
    Console().print(table)
    typer.echo(f"reported Mult-Adds convention: {convention}")
