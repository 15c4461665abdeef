"""PLACEHOLDER: replaced by the module's owner."""

from fgdsr.errors import UserError


def import_weights() -> None:
    """Not written yet."""
    raise UserError("import_weights: not implemented yet")
