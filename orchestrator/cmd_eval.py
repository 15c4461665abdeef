"""PLACEHOLDER: replaced by the module's owner."""

from fgdsr.errors import UserError


def evaluate() -> None:
    """Not written yet."""
    raise UserError("evaluate: not implemented yet")
