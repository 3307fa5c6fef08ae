"""Teacher-forced probe: how many scene nouns the model writes in English.

Each Spanish noun of the image seeds' scene vocabulary (``un cohete``) is asked for in
two requests (``Dibuja un cohete``). The reply is given up to the noun
(``<TOOL:generate_image>{"prompt":"a``) and the noun counts as known when each of its
tokens is the model's top choice. Over several hundred nouns this is a smooth measure
of the vocabulary that training taught, where the dev set has a handful of image
requests. It runs in PyTorch on a peft adapter folder or a GGUF LoRA.

    python -m train.noun_probe --adapter runs/x/adapter [--json]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thau.prompt_format import CHATML, ChatTemplate
from thau.train.data_collate import Encoded, PadToLongest, encode_example

REQUESTS = ("Dibuja {}", "Hazme una imagen de {}")
CALL_OPEN = '<TOOL:generate_image>{"prompt":"'


@dataclass
class ProbeRow:
    """One request, tokenized, and where the English noun's tokens are."""

    spanish: str
    english: str
    encoded: Encoded
    start: int  # first noun token
    end: int  # one past the last


def scene_nouns(seeds: dict[str, Any]) -> list[dict[str, str]]:
    """The ``{es, en}`` pairs of the image seeds' scene vocabulary."""
    return [{"es": t["es"], "en": t["en"]} for t in seeds["image"]["scene"]["things"]]


def probe_rows(
    nouns: Sequence[dict[str, str]],
    system: str,
    tokenizer: Any,
    requests: Sequence[str] = REQUESTS,
    template: ChatTemplate = CHATML,
) -> list[ProbeRow]:
    """Each noun in each request, with the span of the English noun in the reply."""
    from thau.train.dataset import with_article

    rows = []
    for noun in nouns:
        english = noun["en"]
        reply = f'{CALL_OPEN}{with_article(english)}"}}</TOOL>'  # "a unicorn", as taught
        for request in requests:
            messages = [
                {"role": "system", "content": system},
                {"role": "user", "content": request.format(noun["es"])},
                {"role": "assistant", "content": reply},
            ]
            encoded = encode_example(messages, tokenizer, 10_000, template)
            if encoded is None:
                raise ValueError(f"No reply tokens for {noun['es']!r}.")
            ids = encoded.input_ids
            target = tokenizer(f" {english}", add_special_tokens=False)["input_ids"]
            start = next(
                (
                    i
                    for i in range(len(ids) - len(target), 0, -1)
                    if ids[i : i + len(target)] == target
                ),
                None,
            )
            if start is None:
                raise ValueError(f"{english!r} is not tokenized the same inside the reply.")
            rows.append(ProbeRow(noun["es"], english, encoded, start, start + len(target)))
    return rows


def score(model: Any, rows: Sequence[ProbeRow], batch_size: int = 64) -> dict[str, Any]:
    """Teacher-forced accuracy and mean log-probability of the nouns; the nouns missed."""
    import torch

    from thau.train.trainer import AssistantLoss

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    collate = PadToLongest(0)
    hits, logprob, missed = 0, 0.0, []
    model.eval()
    with torch.no_grad():
        for b in range(0, len(rows), batch_size):
            chunk = rows[b : b + batch_size]
            batch = collate([row.encoded for row in chunk])
            prefix = batch["prefix_len"]
            hidden = AssistantLoss.hidden_states(
                base, batch["input_ids"], batch["attention_mask"], prefix
            )
            for i, row in enumerate(chunk):
                # the hidden state at position p predicts token p + 1
                states = hidden[i, row.start - 1 - prefix : row.end - 1 - prefix]
                logits = base.get_output_embeddings()(states).float().log_softmax(-1)
                target = torch.tensor(row.encoded.input_ids[row.start : row.end])
                right = bool((logits.argmax(-1) == target).all())
                hits += right
                logprob += float(logits.gather(1, target[:, None]).sum())
                if not right:
                    missed.append(row.spanish)
    return {
        "n": len(rows),
        "noun_accuracy": hits / len(rows),
        "mean_logprob": logprob / len(rows),
        "missed": sorted(set(missed)),
    }


def load(adapter: Path | None, preset: str) -> tuple[Any, Any, ChatTemplate]:
    """The preset's base (and ``adapter``: a peft folder or a GGUF LoRA), its tokenizer
    and its chat template."""
    from thau.train.base_model import chat_template, load_model, load_tokenizer, resolve_base
    from thau.train.presets import load_preset
    from thau.train.trainer import add_lora, load_adapter_weights

    config = load_preset(preset)
    source = resolve_base(config.base)
    model = load_model(source, "eager")
    if adapter is not None:
        model = add_lora(model, config)
        load_adapter_weights(adapter, model)
    return model, load_tokenizer(source), chat_template(source)


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    from thau.train.dataset import load_seeds, training_system_prompt

    parser = argparse.ArgumentParser(prog="python -m train.noun_probe", description=__doc__)
    parser.add_argument("--adapter", type=Path, help="peft adapter folder or GGUF LoRA")
    parser.add_argument("--preset", default="smollm2-135m", help="base and LoRA shape")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer, template = load(args.adapter, args.preset)
    system = training_system_prompt()
    rows = probe_rows(scene_nouns(load_seeds()), system, tokenizer, template=template)
    result = score(model, rows)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        print(
            f"{result['n']} requests: nouns right {result['noun_accuracy']:.3f}, "
            f"mean log-probability {result['mean_logprob']:.3f}"
        )
        print("missed:", ", ".join(result["missed"]) or "none")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
