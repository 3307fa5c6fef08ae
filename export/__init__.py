"""Export THAU adapters: GGUF LoRA, merged GGUF/safetensors, Modelfiles, Ollama, versions.

Heavy libraries (numpy, gguf, torch, transformers, peft) are imported inside the
functions that need them, so ``import export`` stays cheap.
"""

from thau.export.errors import ExportError, OllamaCreateFailed, OllamaUnreachable

__all__ = ["ExportError", "OllamaCreateFailed", "OllamaUnreachable"]
