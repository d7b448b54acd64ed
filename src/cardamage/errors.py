"""One exception for every problem a user can fix: entry points print one line, no traceback."""


class CardamageError(Exception):
    """A problem with the user's input (file, config, label, ...) described in one line."""
