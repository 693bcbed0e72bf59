"""The one exception type the CLI turns into a one-line error and a non-zero exit."""


class MlopsError(Exception):
    """A problem the user can fix; its message says what is wrong and what to do."""


class UsageError(MlopsError):
    """A command-line argument the parser accepts but the command cannot use."""
