"""Errors raised by ``thau-export``; each message says what to do next."""

from __future__ import annotations

from thau.errors import ThauError


class ExportError(ThauError):
    """An export step cannot go on (bad input, unsupported model or adapter)."""


class OllamaUnreachable(ExportError):
    """No Ollama server answers at the given host."""


class OllamaCreateFailed(ExportError):
    """The Ollama server answered but refused to create the model."""
