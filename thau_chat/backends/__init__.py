"""Model backends and how one is chosen (``--backend auto|ollama|openai|embedded``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from thau.chat.backends.base import Backend, Chunk, GenerationOptions
from thau.chat.config import (
    DEFAULT_OLLAMA_HOST,
    DEFAULT_OLLAMA_MODEL,
    DEFAULT_OPENAI_HOST,
    Settings,
)

__all__ = ["Backend", "Chunk", "GenerationOptions", "Selection", "create_backend"]


@dataclass
class Selection:
    backend: Backend
    note: str  # why this backend, for the person


def _ollama_host(settings: Settings) -> str:
    return settings.host or os.environ.get("OLLAMA_HOST") or DEFAULT_OLLAMA_HOST


def _embedded_base(settings: Settings) -> tuple[Path, bool]:
    """The GGUF the settings name, and whether it is a packaged THAU model: ``thau-<size>``,
    or the embedded default (:func:`thau.base_models.default_embedded_base`) when no model
    is named. A GGUF named by its path runs bare unless an adapter is asked for."""
    from thau.base_models import BY_MODEL_NAME, default_embedded_base, packaged_base_path

    model = settings.model or ""
    packaged = BY_MODEL_NAME.get(model.split(":")[0])
    if model.endswith(".gguf") or (packaged is None and Path(model).expanduser().is_file()):
        return Path(model).expanduser(), False
    # a server model name other than thau-<size> means nothing to llama.cpp
    return packaged_base_path((packaged or default_embedded_base()).name), True


def _embedded(settings: Settings) -> Backend:
    from thau.chat.adapters import choose_adapter
    from thau.chat.backends.embedded import EmbeddedBackend

    path, packaged = _embedded_base(settings)
    choice = choose_adapter(settings.adapter, path, settings.data_dir, shipped=packaged)
    return EmbeddedBackend(path, n_ctx=min(settings.num_ctx, 8192), adapter_choice=choice)


def _using(backend: Backend, lead: str = "Using") -> str:
    """``Using <backend>.``, and why the promoted adapter was passed over, if it was."""
    choice = getattr(backend, "adapter_choice", None)
    why = f" (not the promoted version: {choice.note})" if choice and choice.note else ""
    return f"{lead} {backend.describe()}{why}."


def adapter_outdated(settings: Settings, backend: Backend) -> bool:
    """Whether the embedded ``backend`` would now load another adapter (the training
    service promoted a version since it was built); ``False`` for other backends."""
    if getattr(backend, "name", "") != "embedded":
        return False
    from thau.chat.adapters import choose_adapter

    path, packaged = _embedded_base(settings)
    choice = choose_adapter(settings.adapter, path, settings.data_dir, shipped=packaged)
    return choice.path != getattr(backend, "adapter_path", None)


def create_backend(settings: Settings) -> Selection:
    """The backend the settings ask for; ``auto`` prefers a running Ollama."""
    choice = settings.backend
    if choice == "embedded":
        backend = _embedded(settings)
        return Selection(backend, _using(backend))
    if choice == "openai":
        from thau.chat.backends.openai_compat import OpenAIBackend

        host = settings.host or DEFAULT_OPENAI_HOST
        model = settings.model or DEFAULT_OLLAMA_MODEL
        backend = OpenAIBackend(host, model, settings.api_key, settings.timeout)
        return Selection(backend, f"Using OpenAI-compatible server {host} ({model}).")

    from thau.chat.backends.ollama import OllamaBackend

    host = _ollama_host(settings)
    model = settings.model or DEFAULT_OLLAMA_MODEL
    ollama = OllamaBackend(host, model, settings.timeout)
    if choice == "ollama":
        return Selection(ollama, f"Using Ollama at {host} ({model}).")
    if model.endswith(".gguf"):
        backend = _embedded(settings)
        return Selection(backend, _using(backend))
    if not ollama.is_available():
        why = f"Ollama is not answering at {host}"
    elif not ollama.has_model():
        why = f"Ollama at {host} has no model {model!r}"
    else:
        return Selection(ollama, f"Using Ollama at {host} ({model}).")
    backend = _embedded(settings)
    return Selection(backend, f"{why}; {_using(backend, 'using')}")
