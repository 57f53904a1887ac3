"""User-facing errors: raised for bad input, printed by the tools as one line with a non-zero exit."""


class AsapError(Exception):
    """A mistake in the user's input (file, option, checkpoint) that deserves one clear line, not a traceback."""
