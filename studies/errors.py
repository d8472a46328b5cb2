"""The one exception the CLI turns into a one-line message and exit status 2."""


class UsageError(Exception):
    """Bad user input (flags, files, data). The message names the fix."""
