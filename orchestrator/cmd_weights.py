"""`fgdsr import-weights`: the authors' LapSRN `.mat` (MatConvNet DagNN) -> an fgdsr checkpoint directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def import_weights(
    file: Annotated[
        Path, typer.Argument(help="LapSRN_x2.mat, LapSRN_x4.mat or LapSRN_x8.mat (authors' release)")
    ],
    out: Annotated[Path, typer.Option("--out", help="checkpoint directory to write")],
) -> None:
    """Convert the authors' pretrained LapSRN (MatConvNet) into an fgdsr checkpoint (official layout)."""
    from fgdsr.checkpoint import read_meta
    from fgdsr.matconvnet import import_weights as convert

    path = convert(file, out)
    prov = read_meta(path).get("provenance", {})
    typer.echo(
        f"wrote {path}: LapSRN official x{2 ** prov.get('levels', 0)}, depth {prov.get('depth')}, "
        f"{prov.get('channels')} channels, {prov.get('converted_params')} tensors "
        f"(source sha256 {prov.get('source_sha256', '')[:16]}...)"
    )
