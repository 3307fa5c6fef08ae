"""The label mask and the length-grouped batches, with the real SmolLM2 tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.train.run.conftest import conversations
from thau.prompt_format import IM_END, dumps, message_text
from thau.train.data_collate import (
    IGNORE,
    Encoded,
    LengthGroupedBatches,
    PadToLongest,
    encode_example,
    encode_examples,
)


@pytest.fixture(scope="module")
def tokenizer(tiny_base: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_base)


def labelled_runs(encoded: Encoded) -> list[list[int]]:
    """The labelled tokens, as runs of consecutive positions."""
    runs: list[list[int]] = []
    previous = False
    for token, label in zip(encoded.input_ids, encoded.labels, strict=True):
        labelled = label != IGNORE
        if labelled:
            assert label == token
            if not previous:
                runs.append([])
            runs[-1].append(token)
        previous = labelled
    return runs


def test_labels_are_exactly_the_assistant_replies_and_their_end(tokenizer: Any) -> None:
    for example in conversations():
        encoded = encode_example(example["messages"], tokenizer, max_length=4096)
        assert encoded is not None and not encoded.truncated
        got = [tokenizer.decode(run) for run in labelled_runs(encoded)]
        want = [message_text(m) + IM_END for m in example["messages"] if m["role"] == "assistant"]
        assert got == want


def test_in_call_marks_exactly_the_json_arguments_of_each_call(tokenizer: Any) -> None:
    chats = conversations()
    want = [
        [],  # an answer
        [dumps({"prompt": "a red fox in the snow"})],
        [dumps({"code": "print(2**10)"})],  # a native call, rendered as a tag
        [dumps({"prompt": "a lighthouse at dusk"})],  # not "Sure! ", nor the tool result
        [],
    ]
    for example, calls in zip(chats, want, strict=True):
        encoded = encode_example(example["messages"], tokenizer, max_length=4096)
        assert encoded is not None and len(encoded.in_call) == len(encoded)
        marked: list[list[int]] = []
        previous = False
        for token, label, flag in zip(
            encoded.input_ids, encoded.labels, encoded.in_call, strict=True
        ):
            assert not flag or label != IGNORE  # only labelled tokens
            if flag and not previous:
                marked.append([])
            if flag:
                marked[-1].append(token)
            previous = flag
        assert [tokenizer.decode(run).strip() for run in marked] == calls


def test_in_call_ignores_tags_outside_assistant_replies(tokenizer: Any) -> None:
    tag = '<TOOL:web_search>{"query": "x"}</TOOL>'
    messages = [
        {"role": "user", "content": f"What does {tag} do?"},
        {"role": "assistant", "content": "It asks for a web search."},
    ]
    encoded = encode_example(messages, tokenizer, max_length=4096)
    assert encoded is not None and not any(encoded.in_call)


def test_the_im_end_closing_each_reply_is_one_labelled_token(tokenizer: Any) -> None:
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    example = conversations()[3]  # two assistant turns around a tool result
    encoded = encode_example(example["messages"], tokenizer, max_length=4096)
    assert encoded is not None
    ends = [i for i, token in enumerate(encoded.input_ids) if token == im_end]
    assert len(ends) == len(example["messages"])  # system, user, assistant, tool, assistant
    labelled = [encoded.labels[i] != IGNORE for i in ends]
    assert labelled == [m["role"] == "assistant" for m in example["messages"]]


def test_cut_examples_keep_their_labels_or_are_dropped(tokenizer: Any) -> None:
    examples = conversations()
    full = [encode_example(e["messages"], tokenizer, 4096) for e in examples]
    firsts = [next(i for i, label in enumerate(f.labels) if label != IGNORE) for f in full if f]
    keep_some = encode_examples(examples, tokenizer, max_length=max(firsts) + 2)
    assert len(keep_some.examples) == keep_some.truncated == len(examples)
    assert all(len(e) == max(firsts) + 2 for e in keep_some.examples)
    prompts_only = encode_examples(examples, tokenizer, max_length=min(firsts))
    assert prompts_only.examples == [] and prompts_only.dropped == len(examples)


def test_batches_group_lengths_and_follow_the_seed() -> None:
    lengths = [(i * 37) % 101 + 1 for i in range(200)]
    batches = LengthGroupedBatches(lengths, batch_size=4, seed=7, group_size=5)
    epoch0 = batches.batches()
    assert sorted(i for b in epoch0 for i in b) == list(range(200))
    assert len(epoch0) == len(batches) == 50
    # inside a bucket of 20 examples the lengths are sorted, so each batch is narrow
    padded = sum(len(b) * max(lengths[i] for i in b) for b in epoch0)
    naive = sum(4 * max(lengths[s : s + 4]) for s in range(0, 200, 4))
    assert padded < 0.75 * naive
    assert LengthGroupedBatches(lengths, 4, seed=7, group_size=5).batches() == epoch0
    batches.set_epoch(1)
    assert batches.batches() != epoch0  # a new order each epoch


def test_padding_stops_at_the_longest_example_and_carries_no_loss() -> None:
    batch = PadToLongest(pad_id=0)(
        [Encoded([5, 6, 7], [IGNORE, 6, 7]), Encoded([8, 9], [IGNORE, 9])]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 9, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [IGNORE, 9, IGNORE]]
    assert not batch["in_call"].any()  # no flags given: nothing is inside a call
    flagged = PadToLongest(pad_id=0)(
        [Encoded([5, 6, 7], [IGNORE, 6, 7], in_call=[False, False, True]), Encoded([8], [8])]
    )
    assert flagged["in_call"].tolist() == [[False, False, True], [False, False, False]]


def test_the_shared_prefix_stops_before_the_first_prediction_with_a_label() -> None:
    a = Encoded([1, 2, 3, 4, 5, 6], [IGNORE] * 5 + [6])
    b = Encoded([1, 2, 3, 4, 7, 8, 9], [IGNORE] * 4 + [7, 8, 9])
    c = Encoded([1, 2, 9, 4, 5], [IGNORE] * 4 + [5])
    assert PadToLongest(0)([a, a])["prefix_len"] == 4  # token 4 predicts the label at 5
    assert PadToLongest(0)([a, b])["prefix_len"] == 3  # b's first label is at 4
    assert PadToLongest(0)([a, b, c])["prefix_len"] == 2  # c differs at 2
    assert PadToLongest(0)([b])["prefix_len"] == 0  # one row: nothing to share
    assert PadToLongest(0, share_prefix=False)([a, a])["prefix_len"] == 0


@pytest.fixture(scope="module")
def gemma_tokenizer() -> Any:
    """Gemma 3 270M's own tokenizer (262k pieces), from the packaged GGUF."""
    from thau.train.base_model import load_tokenizer, resolve_base

    return load_tokenizer(resolve_base("gemma3-270m"))


def test_gemma_rows_start_with_bos_and_label_the_model_turns(gemma_tokenizer: Any) -> None:
    """Gemma's turns, BOS first, the same ids llama.cpp makes of the rendered text (what
    the runtime sends), and labels on each model reply and its ``<end_of_turn>``."""
    from llama_cpp import Llama

    from thau.base_models import packaged_base_path
    from thau.prompt_format import GEMMA, render_chat, template_for

    assert template_for("gemma3") is GEMMA and template_for("gemma3_text") is GEMMA
    assert template_for("llama").name == "chatml"
    vocab = Llama(str(packaged_base_path("gemma3-270m")), vocab_only=True, verbose=False)
    for example in conversations():
        messages = example["messages"]
        encoded = encode_example(messages, gemma_tokenizer, 4096, GEMMA)
        assert encoded is not None
        assert encoded.input_ids[0] == gemma_tokenizer.bos_token_id == vocab.token_bos()
        assert encoded.labels[0] == IGNORE
        text = render_chat(messages, add_generation_prompt=False, template=GEMMA)
        assert encoded.input_ids == vocab.tokenize(text.encode(), add_bos=True, special=True)
        got = [gemma_tokenizer.decode(run) for run in labelled_runs(encoded)]
        want = [message_text(m) + GEMMA.end for m in messages if m["role"] == "assistant"]
        assert got == want
