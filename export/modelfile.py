"""Ollama Modelfiles rendered from the one prompt-format source.

``SYSTEM`` is :func:`thau.prompt_format.system_prompt` (short style) for the
registry's tools; ``TEMPLATE`` renders system, user, assistant and tool messages
exactly as :func:`~thau.prompt_format.render_chat` does in the preset's chat template,
and carries ``.Tools`` and ``.ToolCalls`` blocks so that Ollama's native tool API works
with the same text protocol (tool calls in the history become ``<TOOL:name>{json}</TOOL>``).

Where Ollama's rendering can differ from ``render_chat`` (see docs/export.md):
Ollama merges consecutive messages of the same role (except ``tool``) with a blank
line, and prints native tool-call arguments with Go's JSON encoder, which escapes
``<``, ``>`` and ``&`` as ``\\u003c`` etc.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thau import prompt_format
from thau.export.errors import ExportError
from thau.prompt_format import CHATML, GEMMA, TOOL_CLOSE, TOOL_OPEN, ChatTemplate
from thau.resources import modelfiles_dir, shipped_adapters_dir, source_checkout


@dataclass(frozen=True)
class Preset:
    """A THAU model: which base it adapts and how it is served."""

    name: str
    ollama_base: str  # FROM for Ollama (a library model, or the packaged base's file)
    hf_base: str  # the Hugging Face base the adapter is trained on
    template: ChatTemplate = CHATML
    packaged_base: str | None = None  # thau.base_models name: FROM is that GGUF file
    num_ctx: int = 4096
    temperature: float = 0.2
    top_p: float = 0.9
    top_k: int = 40

    @property
    def size(self) -> str:
        """``135m`` for ``thau-135m``."""
        return self.name.removeprefix("thau-")

    @property
    def adapter_file(self) -> Path:
        """Where this preset's GGUF LoRA lives by default (the embedded backend ships
        ``thau-135m-lora.gguf`` from there)."""
        return shipped_adapters_dir() / f"{self.name}-lora.gguf"

    def parameters(self) -> dict[str, Any]:
        """Ollama parameters: sampling, context, and the chat template's stop tokens.

        ``repeat_penalty`` 1 turns off Ollama's default (1.1 over the last 64 tokens), which
        penalizes copying the request's words and numbers into a call; the embedded backend
        and the eval run without it too.
        """
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repeat_penalty": 1.0,
            "num_ctx": self.num_ctx,
            "stop": stop_tokens(self.template),
        }


# One per trainer preset (train/presets/*.yaml); FROM is the same model in Ollama's library.
PRESETS = {
    p.name: p
    for p in (
        Preset("thau-135m", "smollm2:135m", "HuggingFaceTB/SmolLM2-135M-Instruct"),
        Preset("thau-360m", "smollm2:360m", "HuggingFaceTB/SmolLM2-360M-Instruct"),
        # the pretrained Gemma base (Ollama's gemma3:270m is the instruction-tuned one)
        Preset(
            "thau-270m",
            "gemma-3-270m-q4_k_m.gguf",
            "google/gemma-3-270m",
            template=GEMMA,
            packaged_base="gemma3-270m",
        ),
        Preset("thau-0.5b", "qwen2.5:0.5b", "Qwen/Qwen2.5-0.5B-Instruct"),
        Preset("thau-1.5b", "qwen2.5:1.5b", "Qwen/Qwen2.5-1.5B-Instruct"),
        Preset("thau-1b", "llama3.2:1b", "meta-llama/Llama-3.2-1B-Instruct"),
        Preset("thau-1.1b", "tinyllama:1.1b", "TinyLlama/TinyLlama-1.1B-Chat-v1.0"),
    )
}


def preset(name: str) -> Preset:
    """The preset called ``name`` (``thau-135m-v3`` finds ``thau-135m``)."""
    for known in sorted(PRESETS, key=len, reverse=True):
        if name == known or name.startswith(f"{known}-v"):
            return PRESETS[known]
    raise ExportError(f"No preset {name!r}; known: {', '.join(PRESETS)}.")


def stop_tokens(template: ChatTemplate = CHATML) -> list[str]:
    """The chat template's own markers; ``</TOOL>`` is deliberately not a stop."""
    return [template.start, template.end]


def default_system(tools: Sequence[Any] | None = None) -> str:
    """The short system prompt for ``tools`` (default: every registered tool)."""
    if tools is None:
        from thau.tools.registry import ToolRegistry

        tools = list(ToolRegistry.from_entry_points())
    return prompt_format.system_prompt(tools, style="short")


def _go_role(template: ChatTemplate) -> str:
    """``.Role`` in the template's own words (Gemma's assistant is ``model``)."""
    role = "{{ .Role }}"
    for thau_role, own in template.roles.items():
        role = f'{{{{ if eq .Role "{thau_role}" }}}}{own}{{{{ else }}}}{role}{{{{ end }}}}'
    return role


def go_template(template: ChatTemplate = CHATML) -> str:
    """Ollama's ``TEMPLATE`` (Go text/template), equal to ``render_chat`` in ``template``
    (Ollama puts the BOS token first itself where the base wants one).

    A last assistant message stays open (Ollama continues it); otherwise the
    generation prompt follows the last message. With native ``tools`` the first
    system message ends with ``Tools: name(required, ...), ....`` as in the short
    system prompt.
    """
    start, end = template.start, template.end
    return (
        "{{- range $i, $m := .Messages }}\n"
        "{{- $last := eq (len (slice $.Messages $i)) 1 }}"
        f"{start}{_go_role(template)}\n"
        "{{ .Content }}\n"
        '{{- if and (eq $i 0) (eq .Role "system") $.Tools }} Tools:\n'
        "{{- range $j, $t := $.Tools }}{{ if $j }},{{ end }} {{ .Function.Name }}("
        "{{ range $k, $r := .Function.Parameters.Required }}{{ if $k }}, {{ end }}{{ $r }}"
        "{{ end }})\n"
        "{{- end }}.\n"
        "{{- end }}\n"
        "{{- range .ToolCalls }}"
        f"{TOOL_OPEN}{{{{ .Function.Name }}}}>{{{{ .Function.Arguments }}}}{TOOL_CLOSE}\n"
        "{{- end }}\n"
        f'{{{{- if or (ne .Role "assistant") (not $last) }}}}{end}\n'
        "{{ end }}\n"
        f'{{{{- if and $last (ne .Role "assistant") }}}}{start}{template.role("assistant")}\n'
        "{{ end }}\n"
        "{{- end }}"
    )


@dataclass
class Modelfile:
    """The parts of a Modelfile; :meth:`render` writes Ollama's syntax."""

    from_: str
    adapter: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    system: str = ""
    template: str = field(default_factory=go_template)
    header: str = ""

    def render(self) -> str:
        lines = [f"# {line}".rstrip() for line in self.header.splitlines()]
        lines.append(f"FROM {self.from_}")
        if self.adapter:
            lines.append(f"ADAPTER {self.adapter}")
        for key, value in self.parameters.items():
            for item in value if isinstance(value, list) else [value]:
                lines.append(f"PARAMETER {key} {_quote(item)}")
        lines.append(f"SYSTEM {_triple(self.system)}")
        lines.append(f"TEMPLATE {_triple(self.template)}")
        return "\n".join(lines) + "\n"


def _quote(value: Any) -> str:
    text = str(value)
    plain = text and not any(c in text for c in ' \t"#<>|')
    return text if plain else f'"{text}"'


def _triple(text: str) -> str:
    if '"""' in text:
        raise ExportError('A Modelfile value cannot contain """; change the text.')
    return f'"""{text}"""'


def build_modelfile(
    name: str = "thau-135m",
    *,
    adapter: str | Path | None = None,
    from_: str | None = None,
    system: str | None = None,
    header: str = "",
) -> Modelfile:
    """The Modelfile of preset ``name``: ``FROM`` its Ollama base (or ``from_``),
    ``ADAPTER`` when given, its parameters, the short system prompt, the template."""
    chosen = preset(name)
    return Modelfile(
        from_=from_ or ollama_base(chosen),
        adapter=str(adapter) if adapter else None,
        parameters=chosen.parameters(),
        system=default_system() if system is None else system,
        template=go_template(chosen.template),
        header=header,
    )


def ollama_base(chosen: Preset) -> str:
    """What ``FROM`` names: the library model, or the packaged base's GGUF (assembled
    offline, see :mod:`thau.base_models`)."""
    if chosen.packaged_base is None:
        return chosen.ollama_base
    from thau.base_models import packaged_base_path

    return str(packaged_base_path(chosen.packaged_base))


def preset_modelfile(name: str, folder: Path | None = None) -> str:
    """The text of ``<folder>/<name>.Modelfile`` (default: the shipped ``Modelfiles/``);
    ``ADAPTER`` is the preset's default adapter, relative to that folder (Ollama resolves
    it from there)."""
    chosen = preset(name)
    folder = folder or modelfiles_dir()
    relative = Path(os.path.relpath(chosen.adapter_file, folder)).as_posix()
    root = source_checkout()
    from_root = (
        chosen.adapter_file.relative_to(root).as_posix() if root else str(chosen.adapter_file)
    )
    lines = [
        f"{chosen.name}: {chosen.hf_base} with the THAU LoRA adapter.",
        "Rendered by `thau-export modelfile --all` from thau/prompt_format.py; "
        "do not edit by hand.",
        f"First: thau-export adapter --adapter <trainer out>/adapter --out {from_root}",
    ]
    if chosen.packaged_base:
        lines.append(
            f"and:   thau-export base --name {chosen.name} --out "
            f"{folder.name}/{chosen.ollama_base} (offline, from `pip install 'thau[gemma]'`)"
        )
        lines.append("Gemma is provided under the Gemma Terms of Use: ai.google.dev/gemma/terms")
    lines.append(f"Then:  ollama create {chosen.name} -f {folder.name}/{chosen.name}.Modelfile")
    modelfile = build_modelfile(
        chosen.name, adapter=relative, from_=chosen.ollama_base, header="\n".join(lines)
    )
    return modelfile.render()


def render_presets(folder: Path) -> list[Path]:
    """Write ``<folder>/<preset>.Modelfile`` for every preset."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in PRESETS:
        path = folder / f"{name}.Modelfile"
        path.write_text(preset_modelfile(name, folder), encoding="utf-8")
        written.append(path)
    return written


def parse_modelfile(text: str) -> dict[str, Any]:
    """Read what :meth:`Modelfile.render` writes, unquoting as Ollama's parser does:
    ``from``, ``adapter``, ``system``, ``template`` and ``parameters`` (a list per key)."""
    out: dict[str, Any] = {"parameters": {}}
    pos = 0
    while pos < len(text):
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        line = text[pos:end]
        if not line.strip() or line.lstrip().startswith("#"):
            pos = end + 1
            continue
        command, _, rest = line.partition(" ")
        if rest.startswith('"""'):
            start = pos + len(command) + 4
            close = text.index('"""', start)
            value = text[start:close]
            end = text.find("\n", close)
            end = len(text) if end < 0 else end
        else:
            value = rest.strip()
        if command.lower() == "parameter":
            key, _, raw = value.partition(" ")
            raw = raw.strip()
            raw = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == '"' else raw
            out["parameters"].setdefault(key, []).append(raw)
        else:
            out[command.lower()] = value
        pos = end + 1
    return out
