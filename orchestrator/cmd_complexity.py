"""PLACEHOLDER: replaced by the module's owner."""

from fgdsr.errors import UserError


def complexity() -> None:
    """Not written yet."""
    raise UserError("complexity: not implemented yet")
