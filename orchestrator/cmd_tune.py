"""PLACEHOLDER: replaced by the module's owner."""

from fgdsr.errors import UserError


def tune() -> None:
    """Not written yet."""
    raise UserError("tune: not implemented yet")


def ui() -> None:
    """Not written yet."""
    raise UserError("ui: not implemented yet")


def tracking_server() -> None:
    """Not written yet."""
    raise UserError("tracking_server: not implemented yet")
