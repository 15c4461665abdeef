"""PLACEHOLDER: replaced by the module's owner."""

from fgdsr.errors import UserError


def export() -> None:
    """Not written yet."""
    raise UserError("export: not implemented yet")


def build_engine() -> None:
    """Not written yet."""
    raise UserError("build_engine: not implemented yet")


def benchmark() -> None:
    """Not written yet."""
    raise UserError("benchmark: not implemented yet")
