"""Test doubles for the cycle's steps, a small dataset, and a tiny random Llama."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from thau.train.service import ServiceConfig, ServicePaths, Steps, TrainingService, TrainJob

SYSTEM = "You are THAU. Tools: generate_image(prompt), code_execution(code), web_search(query)."
BASE_METRICS = {
    "n": 10,
    "decision_accuracy": 0.5,
    "json_valid_rate": 0.9,
    "args_match_rate": 0.5,
    "false_tool_rate": 0.2,
}


def chats() -> list[dict[str, Any]]:
    """Four small chats in THAU's format: answers and tool calls."""
    pairs = [
        ("What is the capital of Peru?", "The capital of Peru is Lima."),
        ("Draw a red fox in the snow", '<TOOL:generate_image>{"prompt": "a red fox"}</TOOL>'),
        ("Run print(2**10)", '<TOOL:code_execution>{"code": "print(2**10)"}</TOOL>'),
        ("Hola, ¿qué tal?", "¡Hola! Muy bien, ¿en qué te ayudo?"),
    ]
    return [
        {
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": user},
                {"role": "assistant", "content": reply},
            ]
        }
        for user, reply in pairs
    ]


class QualityTrainer:
    """A train step whose adapter's quality is the share of training rows whose last reply
    is not marked ``WRONG``; it keeps every job and the rows it trained on."""

    def __init__(self) -> None:
        self.jobs: list[TrainJob] = []
        self.rows: list[list[dict[str, Any]]] = []

    def __call__(self, job: TrainJob) -> Path:
        self.jobs.append(job)
        rows = [json.loads(line) for line in job.train_file.read_text("utf-8").splitlines()]
        self.rows.append(rows)
        bad = sum("WRONG" in row["messages"][-1]["content"] for row in rows)
        adapter = job.out_dir / "adapter"
        adapter.mkdir(parents=True)
        (adapter / "adapter_config.json").write_text(json.dumps({"r": 4}), "utf-8")
        quality = {"quality": round(1 - bad / len(rows), 4), "rows": len(rows)}
        (adapter / "quality.json").write_text(json.dumps(quality), "utf-8")
        return adapter


def quality_evaluate(adapter: Path | None) -> dict[str, Any]:
    """An evaluate step: the base scores :data:`BASE_METRICS`, an adapter its quality."""
    if adapter is None:
        return dict(BASE_METRICS)
    q = json.loads((adapter / "quality.json").read_text("utf-8"))["quality"]
    return {
        "n": 10,
        "decision_accuracy": q,
        "json_valid_rate": q,
        "args_match_rate": q,
        "false_tool_rate": round(1 - q, 4),
    }


def write_dataset(folder: Path, train_rows: int = 20) -> Path:
    """A stand-in for the balanced set: ``train_rows`` chats and 2 validation chats."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(train_rows):
        chat = chats()[i % 4]
        chat["messages"][1]["content"] += f" (variant {i})"
        rows.append(chat)
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    valid = chats()[:2]
    (folder / "valid.jsonl").write_text("".join(json.dumps(c) + "\n" for c in valid), "utf-8")
    return folder


def good(i: int) -> dict[str, str]:
    return {"instruction": f"What is {i} plus {i}?", "output": f"{i} plus {i} is {2 * i}."}


def wrong(i: int) -> dict[str, str]:
    return {"instruction": f"What is {i} times {i}?", "output": f"WRONG: {i + 1}"}


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "dataset")


@pytest.fixture
def config(dataset_dir: Path) -> ServiceConfig:
    return ServiceConfig.for_size(
        "135m",
        min_new_examples=3,
        replay_ratio=2.0,
        valid_size=2,
        dataset_dir=str(dataset_dir),
        ollama=False,
    )


@pytest.fixture
def trainer() -> QualityTrainer:
    return QualityTrainer()


@pytest.fixture
def service(config: ServiceConfig, trainer: QualityTrainer) -> Any:
    svc = TrainingService(
        config,
        ServicePaths.default(),
        Steps(train=trainer, evaluate=quality_evaluate),
        system_prompt=SYSTEM,
    )
    yield svc
    svc.close()


# -- a tiny real model for the real trainer -------------------------------------------------
@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama (hidden 16) with a small byte-level BPE tokenizer trained on
    the test chats; ChatML markers are special tokens."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from thau.prompt_format import render_chatml

    folder = tmp_path_factory.mktemp("tiny-base")
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    texts = [render_chatml(c["messages"]) for c in chats()] + [SYSTEM, "WRONG plus times is"]
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
