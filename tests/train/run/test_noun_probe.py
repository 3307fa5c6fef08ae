"""The teacher-forced noun probe: the noun spans it scores, and scores equal to a plain
forward pass without the shared prefix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.train.run.conftest import smollm2_tokenizer
from thau.train.dataset import load_seeds, training_system_prompt
from thau.train.noun_probe import main, probe_rows, scene_nouns, score

NOUNS = [
    {"es": "un cohete", "en": "rocket"},
    {"es": "un elefante", "en": "elephant"},
    {"es": "una casa del árbol", "en": "treehouse"},
    {"es": "un camión de bomberos", "en": "fire truck"},
    {"es": "un unicornio", "en": "unicorn"},
]


def test_each_row_scores_exactly_the_english_noun_inside_the_call() -> None:
    tokenizer = smollm2_tokenizer()
    rows = probe_rows(NOUNS, training_system_prompt(), tokenizer)
    assert len(rows) == 2 * len(NOUNS)
    for row in rows:
        ids = row.encoded.input_ids
        assert tokenizer.decode(ids[row.start : row.end]) == f" {row.english}"
        before = tokenizer.decode(ids[: row.start])
        article = "an" if row.english == "elephant" else "a"  # "a unicorn", as the data has it
        assert before.endswith(f'<TOOL:generate_image>{{"prompt":"{article}'), before
        assert row.spanish in before  # the request asks for the Spanish noun
        assert all(label != -100 for label in row.encoded.labels[row.start : row.end])


def test_every_scene_noun_of_the_seeds_can_be_probed() -> None:
    nouns = scene_nouns(load_seeds())
    assert len(nouns) > 300 and {"es": "un cohete", "en": "rocket"} in nouns
    rows = probe_rows(nouns, training_system_prompt(), smollm2_tokenizer(), requests=("Dibuja {}",))
    assert len(rows) == len(nouns)


def test_scores_match_a_plain_forward_pass(tiny_base: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_base, attn_implementation="eager")
    rows = probe_rows(NOUNS, training_system_prompt(), smollm2_tokenizer())
    result = score(model, rows, batch_size=3)  # batches share the system prompt's prefix
    hits, logprob, missed = 0, 0.0, set()
    with torch.no_grad():
        for row in rows:
            ids = torch.tensor([row.encoded.input_ids])
            logits = model(input_ids=ids).logits[0].float().log_softmax(-1)
            predicted = logits[row.start - 1 : row.end - 1]
            target = ids[0, row.start : row.end]
            right = bool((predicted.argmax(-1) == target).all())
            hits += right
            if not right:
                missed.add(row.spanish)
            logprob += float(predicted.gather(1, target[:, None]).sum())
    assert result["n"] == len(rows)
    assert result["noun_accuracy"] == hits / len(rows)
    assert result["mean_logprob"] == pytest.approx(logprob / len(rows), abs=1e-4)
    assert result["missed"] == sorted(missed)


def test_the_command_prints_the_probe_as_json(tiny_base: Path, tmp_path: Path, capsys) -> None:
    preset = tmp_path / "tiny.yaml"
    preset.write_text(f"base: {tiny_base}\nlora_r: 8\nlora_alpha: 16\n", "utf-8")
    assert main(["--preset", str(preset), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 2 * len(scene_nouns(load_seeds()))
    assert 0.0 <= result["noun_accuracy"] < 0.05  # a random model knows no nouns
    assert result["mean_logprob"] < -5
