"""The one exception type that reaches the user as a one-line message (CLI exit code 2)."""


class UserError(Exception):
    """Bad input from the user: a file, a field or an argument. The message names it and the fix."""
