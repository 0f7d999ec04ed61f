"""Exceptions raised by hear_gram."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be found, or does not fit the model it is loaded into."""
