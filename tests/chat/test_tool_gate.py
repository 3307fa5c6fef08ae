"""The confidence gate on scripted token probabilities: llama.cpp's side (the logits
processor's view of each step) is played by a script; the gate and the stream logic are
the embedded backend's own. The real model is checked at the end."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.scripted import ScriptedBackend
from thau.chat.agent import Agent
from thau.chat.backends.base import GenerationOptions
from thau.chat.backends.embedded import EmbeddedBackend, default_model_path
from thau.chat.backends.tool_gate import DEFAULT_THRESHOLD, TokenRecorder, opening_token_ids
from thau.tools.registry import ToolContext, ToolRegistry

VOCAB = ["<", " <", "TO", "OL", ":", "web_search", ">", '{"query": "x"}', "Hola", " mundo", "."]
SCHEMAS = {"web_search": {"type": "object", "properties": {"query": {"type": "string"}}}}


class Vocab:
    """The tokenizer side of ``llama_cpp.Llama`` that the gate uses."""

    def n_vocab(self) -> int:
        return len(VOCAB)

    def detokenize(self, ids: list[int]) -> bytes:
        return "".join(VOCAB[i] for i in ids).encode("utf-8")


class ScriptedLlama(EmbeddedBackend):
    """The embedded backend with llama.cpp replaced by a script: each completion takes the
    next list of steps; a step is ``{token text: probability}``. Like llama.cpp, every step
    goes through the logits processor; the sampler then takes the first listed token that
    the processor left possible (a scripted draw)."""

    def __init__(self, script: list[list[dict[str, float]]]) -> None:
        super().__init__(default_model_path())
        self.script = list(script)
        self._llm = Vocab()
        self.prompts: list[str] = []

    def _complete(self, prompt: str, options: GenerationOptions, **extra: Any) -> Iterator[str]:
        import numpy as np

        self.prompts.append(prompt)
        processors = extra.get("logits_processor") or []
        ids = [0]
        for step in self.script.pop(0):
            logits = np.full(len(VOCAB), -1e9, dtype=np.float32)
            for text, probability in step.items():
                logits[VOCAB.index(text)] = math.log(probability)
            for processor in processors:
                logits = processor(np.array(ids, dtype=np.intc), logits)
            allowed = [VOCAB.index(text) for text in step if logits[VOCAB.index(text)] > -1e30]
            token = allowed[0] if allowed else int(np.argmax(logits))
            ids.append(token)
            yield VOCAB[token]


def opening(p: float) -> list[dict[str, float]]:
    return [{"<": p, "Hola": 1 - p}, {"TO": 1.0}, {"OL": 1.0}, {":": 1.0}, {"web_search": 1.0}]


NAME = [{"web_search": 1.0}, {">": 1.0}]
BODY = [{'{"query": "x"}': 1.0}]
PLAIN = [{"<": 0.9, "Hola": 0.1}, {" mundo": 1.0}, {".": 1.0}]


def reply(backend: EmbeddedBackend, gate: float | None) -> tuple[str, list[str]]:
    options = GenerationOptions(
        temperature=0, grammar_tools=True, tool_schemas=SCHEMAS, tool_gate=gate
    )
    chunks = [
        c.text for c in backend.stream_chat([{"role": "user", "content": "q"}], options=options)
    ]
    return "".join(chunks), chunks


def test_a_confident_opening_becomes_a_call() -> None:
    backend = ScriptedLlama([opening(0.9), NAME, BODY])
    text, _ = reply(backend, gate=0.5)
    assert text == '<TOOL:web_search>{"query": "x"}</TOOL>'
    [decision] = backend.gate_log
    assert decision.opened and decision.probability == pytest.approx(0.9)


def test_a_doubtful_opening_is_taken_back_and_the_reply_goes_on_in_text() -> None:
    backend = ScriptedLlama([opening(0.6), PLAIN])
    text, chunks = reply(backend, gate=0.7)
    assert text == "Hola mundo."
    assert not any("<" in c for c in chunks)  # the held-back opening never reached the screen
    [decision] = backend.gate_log
    assert not decision.opened and decision.probability == pytest.approx(0.6)
    assert backend.prompts[1] == backend.prompts[0]  # the retry starts where the call began


def test_text_before_a_refused_call_is_kept_once() -> None:
    before = [{"Hola": 1.0}, {" <": 0.4, ".": 0.6}, {"TO": 1.0}, {"OL": 1.0}, {":": 1.0}]
    after = [{" <": 0.5, " mundo": 0.5}, {".": 1.0}]
    backend = ScriptedLlama([before, after])
    text, _ = reply(backend, gate=0.8)
    assert text == "Hola mundo."
    assert backend.prompts[1].endswith("Hola")


def test_measuring_only_never_refuses() -> None:
    backend = ScriptedLlama([opening(0.2), NAME, BODY])
    text, _ = reply(backend, gate=0.0)
    assert text.startswith("<TOOL:web_search>")
    assert backend.gate_log[0].probability == pytest.approx(0.2)


def test_without_a_gate_nothing_is_measured() -> None:
    backend = ScriptedLlama([opening(0.2), NAME, BODY])
    text, _ = reply(backend, gate=None)
    assert text.startswith("<TOOL:web_search>") and backend.gate_log == []


def test_the_recorder_gives_the_chosen_token_its_own_probability() -> None:
    import numpy as np

    recorder = TokenRecorder(banned=[0, 1], ban_first=True)
    first = recorder(np.array([5], dtype=np.intc), np.log(np.array([0.7, 0.1, 0.2])))
    assert first[0] == -np.inf and first[1] == -np.inf and first[2] > -np.inf
    recorder(np.array([5, 2], dtype=np.intc), np.log(np.array([0.5, 0.25, 0.25])))
    assert recorder.chosen == [(2, pytest.approx(0.2))]  # before the ban: the model's own
    assert sorted(opening_token_ids(Vocab())) == [0, 1]


def agent_for(model: str, gate: float | None) -> Agent:
    backend = ScriptedBackend([["hi"]], model=model)
    options = GenerationOptions(tool_gate=gate)
    return Agent(backend, ToolRegistry(), context=ToolContext(Path(".")), options=options)


def test_the_agent_gates_thau_models_only_and_follows_the_setting() -> None:
    assert agent_for("thau-135m", None)._step_options(final=False).tool_gate == DEFAULT_THRESHOLD
    assert agent_for("thau-135m", 0.8)._step_options(final=False).tool_gate == 0.8
    assert agent_for("thau-135m", 0.8)._step_options(final=True).tool_gate is None
    assert agent_for("qwen2.5:0.5b", 0.8)._step_options(final=False).tool_gate is None


@pytest.mark.slow
def test_the_real_model_is_refused_below_the_threshold_and_called_above() -> None:
    """SmolLM2-135M with the shipped adapter: a clear search request opens a call; with
    a threshold no opening reaches, the same request gets a plain-text reply."""
    from thau.chat.backends.embedded import default_adapter_path
    from thau.prompt_format import system_prompt

    registry = ToolRegistry.from_entry_points()
    backend = EmbeddedBackend(default_model_path(), default_adapter_path())
    schemas = {t.name: t.parameters() for t in registry}
    messages = [
        {"role": "system", "content": system_prompt(list(registry), style="short")},
        {"role": "user", "content": "Search the web for llama.cpp news"},
    ]

    def run(gate: float) -> str:
        options = GenerationOptions(
            temperature=0, max_tokens=60, grammar_tools=True, tool_schemas=schemas, tool_gate=gate
        )
        return "".join(c.text for c in backend.stream_chat(messages, options=options))

    assert run(0.0).startswith("<TOOL:web_search>")
    measured = backend.gate_log[0].probability
    assert measured is not None and 0 < measured <= 1
    refused = run(1.0)
    assert "<TOOL:" not in refused and refused.strip()
    assert backend.gate_log and not any(d.opened for d in backend.gate_log)
