"""PLACEHOLDER: replaced by the module's owner."""

from fgdsr.errors import UserError


def train() -> None:
    """Not written yet."""
    raise UserError("train: not implemented yet")


def upscale() -> None:
    """Not written yet."""
    raise UserError("upscale: not implemented yet")
