"""The error a preprocessing run stops with, and how it crosses the runner."""
from __future__ import annotations

ERROR_MARK = "[gpt_keras.preprocess]"


class PreprocessError(RuntimeError):
    """A run that must stop: too many bad rows, inconsistent counts, no data.

    Raised inside the pipeline with ERROR_MARK in the message so that the
    driver can re-raise it cleanly from whatever the runner wraps it in."""

    def __init__(self, message: str):
        super().__init__(message if message.startswith(ERROR_MARK) else f"{ERROR_MARK} {message}")

    @property
    def message(self) -> str:
        """The message without ERROR_MARK."""
        return str(self)[len(ERROR_MARK) + 1:]
