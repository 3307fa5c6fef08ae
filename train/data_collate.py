"""Examples to token batches: labels on assistant output only, length-grouped batches.

Each example's messages are rendered with :func:`thau.prompt_format.render_chat` in the
base's chat template and tokenized with character offsets (after the BOS token, for bases
that want one); a token is labelled when it overlaps one of
:func:`thau.prompt_format.assistant_spans` (assistant content plus its turn's closing
marker). Everything else (BOS, system, user, tool results, role headers, padding) has
label ``-100`` and carries no loss.

Every example of the tool-calling set starts with the same system prompt, most of its
tokens. :class:`PadToLongest` measures the prefix that a batch shares, so that the loss
can run it once for the whole batch (:class:`train.trainer.AssistantLoss`).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from thau.prompt_format import CHATML, TOOL_CALL_RE, ChatTemplate, assistant_spans, render_chat

IGNORE = -100  # the label of a token that carries no loss


@dataclass
class Encoded:
    """One tokenized example."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False
    in_call: list[bool] = field(default_factory=list)  # labelled and inside a call's JSON

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def first_label(self) -> int:
        return next(i for i, label in enumerate(self.labels) if label != IGNORE)


@dataclass
class EncodedSet:
    """A tokenized split, and what cutting it at ``max_length`` cost."""

    examples: list[Encoded] = field(default_factory=list)
    truncated: int = 0  # examples cut at max_length (kept: a label survived)
    dropped: int = 0  # examples with no assistant token left after the cut

    @property
    def tokens(self) -> int:
        return sum(len(e) for e in self.examples)

    @property
    def label_tokens(self) -> int:
        return sum(sum(label != IGNORE for label in e.labels) for e in self.examples)


def call_argument_spans(text: str, spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Character spans of the JSON arguments of each tool call inside ``spans``."""
    out = []
    for start, end in spans:
        for match in TOOL_CALL_RE.finditer(text, start, end):
            out.append(match.span(2))
    return out


def overlaps(spans: Sequence[tuple[int, int]], offsets: Sequence[tuple[int, int]]) -> list[bool]:
    """For each token's character offsets, whether it overlaps one of the sorted ``spans``."""
    flags, span = [], 0
    for start, end in offsets:
        while span < len(spans) and spans[span][1] <= start:
            span += 1
        flags.append(span < len(spans) and start < spans[span][1] and end > spans[span][0])
    return flags


def encode_example(
    messages: Sequence[Mapping[str, Any]],
    tokenizer: Any,
    max_length: int,
    template: ChatTemplate = CHATML,
) -> Encoded | None:
    """Token ids and labels of one conversation; ``None`` when no label survives the cut."""
    text = render_chat(messages, add_generation_prompt=False, template=template)
    spans = assistant_spans(messages, template)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = encoding["input_ids"]
    offsets = list(encoding["offset_mapping"])
    if template.bos:  # as llama.cpp and Ollama tokenize: BOS first, never labelled
        if tokenizer.bos_token_id is None:
            raise ValueError(f"The {template.name} template needs a BOS token; none is set.")
        ids, offsets = [tokenizer.bos_token_id, *ids], [(0, 0), *offsets]
    labelled = overlaps(spans, offsets)
    labels = [token if keep else IGNORE for token, keep in zip(ids, labelled, strict=True)]
    arguments = overlaps(call_argument_spans(text, spans), offsets)
    in_call = [a and keep for a, keep in zip(arguments, labelled, strict=True)]
    truncated = len(ids) > max_length
    ids, labels, in_call = ids[:max_length], labels[:max_length], in_call[:max_length]
    if all(label == IGNORE for label in labels[1:]):  # position 0 is never predicted
        return None
    return Encoded(ids, labels, truncated, in_call)


def encode_examples(
    examples: Sequence[Mapping[str, Any]],
    tokenizer: Any,
    max_length: int,
    template: ChatTemplate = CHATML,
) -> EncodedSet:
    """Tokenize every example of a split (``{"messages": [...]}`` objects)."""
    out = EncodedSet()
    for example in examples:
        encoded = encode_example(example["messages"], tokenizer, max_length, template)
        if encoded is None:
            out.dropped += 1
            continue
        out.truncated += encoded.truncated
        out.examples.append(encoded)
    return out


class LengthGroupedBatches:
    """Batches of similar length, so that padding stays small.

    Each epoch: shuffle the examples (seeded by ``seed`` and the epoch), cut them into
    buckets of ``group_size`` batches, sort each bucket by length, cut it into batches,
    and shuffle the order of all batches. The order depends only on ``seed`` and the
    epoch, so a resumed run sees the same batches as an uninterrupted one.
    With ``shuffle=False`` (validation) the batches simply follow length order.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        seed: int = 0,
        group_size: int = 16,
        shuffle: bool = True,
    ) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group_size = group_size
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """The batches (lists of example indices) of the current epoch."""
        order = list(range(len(self.lengths)))
        size = self.batch_size
        if not self.shuffle:
            order.sort(key=lambda i: self.lengths[i], reverse=True)
            return [order[i : i + size] for i in range(0, len(order), size)]
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        rng.shuffle(order)
        bucket = size * self.group_size
        batches = []
        for b in range(0, len(order), bucket):
            group = sorted(order[b : b + bucket], key=lambda i: self.lengths[i], reverse=True)
            batches.extend(group[i : i + size] for i in range(0, len(group), size))
        rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)


def shared_prefix(batch: Sequence[Encoded]) -> int:
    """How many leading tokens all examples of ``batch`` share, up to (not including) the
    last token before any label: no prediction with a label comes from inside the prefix."""
    if len(batch) < 2:
        return 0
    first = batch[0].input_ids
    limit = min(min(len(e) for e in batch), min(e.first_label for e in batch)) - 1
    n = 0
    while n < limit and all(e.input_ids[n] == first[n] for e in batch):
        n += 1
    return n


class PadToLongest:
    """Collate encoded examples into tensors padded to the longest one of the batch.

    ``prefix_len`` in the batch is the length of the prefix that every row shares
    (0 when ``share_prefix`` is off); ``in_call`` marks the labels inside a tool call's
    JSON arguments.
    """

    def __init__(self, pad_id: int, *, share_prefix: bool = True) -> None:
        self.pad_id = pad_id
        self.share_prefix = share_prefix

    def __call__(self, batch: Sequence[Encoded]) -> dict[str, Any]:
        import torch

        width = max(len(e) for e in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        in_call = torch.zeros((len(batch), width), dtype=torch.bool)
        for row, e in enumerate(batch):
            n = len(e)
            ids[row, :n] = torch.tensor(e.input_ids)
            labels[row, :n] = torch.tensor(e.labels)
            mask[row, :n] = 1
            if e.in_call:
                in_call[row, :n] = torch.tensor(e.in_call)
        prefix = shared_prefix(batch) if self.share_prefix else 0
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": labels,
            "prefix_len": prefix,
            "in_call": in_call,
        }
