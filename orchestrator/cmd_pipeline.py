"""PLACEHOLDER: replaced by the module's owner."""

from fgdsr.errors import UserError


def pipeline() -> None:
    """Not written yet."""
    raise UserError("pipeline: not implemented yet")


def reproduce() -> None:
    """Not written yet."""
    raise UserError("reproduce: not implemented yet")
