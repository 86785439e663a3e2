"""Errors raised by schema decoding."""


class InvalidEvent(ValueError):
    """An event that breaks its schema. It goes to the dead-letter queue, reason ``invalid``."""
