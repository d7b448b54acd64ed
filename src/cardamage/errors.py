"""One exception type for every problem a user can fix, so entry points print one line, not a traceback."""


class CardamageError(Exception):
    """A problem with the user's input (file, config, label, ...) described in one line."""
