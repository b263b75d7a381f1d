"""The base of every error that ffrep reports to a user as a plain message."""


class FFrepError(Exception):
    """A problem with the user's input or files; the message names the fix."""
