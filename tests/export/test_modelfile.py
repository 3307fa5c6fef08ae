"""Modelfiles: rendered from the prompt-format source; the Go TEMPLATE renders every
role exactly as ``render_chatml`` does (checked with a Go text/template evaluator)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.export.gotemplate import GoJSON, TemplateError, execute
from thau.export.cli import main
from thau.export.modelfile import (
    PRESETS,
    build_modelfile,
    default_system,
    go_template,
    parse_modelfile,
    preset_modelfile,
    render_presets,
)
from thau.prompt_format import (
    CHATML,
    GEMMA,
    IM_END,
    IM_START,
    ChatTemplate,
    format_tool_call,
    format_tool_result,
    render_chat,
    render_chatml,
    system_prompt,
)
from thau.resources import modelfiles_dir, shipped_adapters_dir
from thau.tools.registry import ToolRegistry


def ollama_values(messages: list[dict[str, Any]], tools: list[Any] | None = None) -> dict:
    """What Ollama hands a TEMPLATE: ``.Messages`` (Role, Content, ToolCalls), ``.Tools``."""
    values = []
    for m in messages:
        entry: dict[str, Any] = {"Role": m["role"], "Content": m["content"]}
        if m.get("tool_calls"):
            entry["ToolCalls"] = [
                {"Function": {"Name": c["name"], "Arguments": GoJSON(c["arguments"])}}
                for c in m["tool_calls"]
            ]
        values.append(entry)
    return {"Messages": values, "Tools": tools or [], "System": ""}


def every_role() -> list[dict[str, Any]]:
    """System, user, assistant (text and native calls, all three tools) and tool."""
    image = format_tool_call("generate_image", {"prompt": "an orange cat"})
    return [
        {"role": "system", "content": default_system()},
        {"role": "user", "content": "Dibuja un gato naranja"},
        {"role": "assistant", "content": image},
        {"role": "tool", "content": format_tool_result("generate_image", True, {"url": "/i.png"})},
        {"role": "assistant", "content": "Aquí tienes tu gato: /i.png"},
        {"role": "user", "content": "Search the weather in Madrid, then compute 2**10"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"name": "web_search", "arguments": {"query": "weather Madrid", "max_results": 3}},
                {"name": "code_execution", "arguments": {"code": "print(2**10)"}},
            ],
        },
        {"role": "tool", "content": format_tool_result("web_search", False, error="timeout")},
        {"role": "tool", "content": format_tool_result("code_execution", True, {"out": "1024"})},
        {"role": "assistant", "content": "The search timed out; 2**10 is 1024."},
        {"role": "user", "content": "¿Y mañana? ñ ü 漢字"},
    ]


def test_template_renders_every_role_like_render_chatml() -> None:
    messages = every_role()
    rendered = execute(go_template(), ollama_values(messages))
    assert rendered == render_chatml(messages)
    assert rendered.endswith(f"{IM_START}assistant\n")
    assert rendered.count(IM_START) == len(messages) + 1


def test_gemma_template_renders_every_role_like_render_chat() -> None:
    messages = every_role()
    rendered = execute(go_template(GEMMA), ollama_values(messages))
    assert rendered == render_chat(messages, template=GEMMA)
    assert rendered.startswith("<start_of_turn>system\nYou are THAU")
    assert "<start_of_turn>model\n<TOOL:generate_image>" in rendered
    assert "<start_of_turn>tool\n" in rendered and "<start_of_turn>assistant" not in rendered
    assert rendered.endswith("<end_of_turn>\n<start_of_turn>model\n")
    assert rendered.count("<start_of_turn>") == len(messages) + 1
    assert IM_START not in rendered and IM_END not in rendered


@pytest.mark.parametrize("template", [CHATML, GEMMA], ids=lambda t: t.name)
def test_template_leaves_a_last_assistant_message_open(template: ChatTemplate) -> None:
    messages = [*every_role()[:2], {"role": "assistant", "content": "<TOOL:generate_image>"}]
    rendered = execute(go_template(template), ollama_values(messages))
    closed = render_chat(messages, add_generation_prompt=False, template=template)
    assert rendered == closed.removesuffix(f"{template.end}\n")


def test_native_tools_are_listed_like_the_short_prompt() -> None:
    """Tools passed through Ollama's API end the first system message the way the short
    system prompt lists them: ``Tools: name(required, ...), ....``."""
    registry = list(ToolRegistry.from_entry_points())
    tools = []
    for schema in (tool.native_schema()["function"] for tool in registry):
        required = schema["parameters"].get("required", [])
        function = {"Name": schema["name"], "Description": schema["description"]}
        tools.append({"Function": {**function, "Parameters": {"Required": required}}})
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hola"}]
    rendered = execute(go_template(), ollama_values(messages, tools))
    head = f"{IM_START}system\nBe brief. Tools: "
    assert rendered.startswith(head)
    listing = rendered[len(head) - len("Tools: ") : rendered.index(IM_END)]
    assert listing.startswith("Tools: code_execution(code), ")
    assert f" {listing} " in f" {system_prompt(registry, style='short')} "
    assert rendered.endswith(f"{IM_END}\n{IM_START}user\nhola{IM_END}\n{IM_START}assistant\n")


def test_go_json_arguments_escape_html_like_ollama() -> None:
    """The one known difference: Go's JSON encoder writes ``<`` as ``\\u003c``."""
    call = {"name": "code_execution", "arguments": {"code": "print(1 < 2)"}}
    messages = [{"role": "assistant", "content": "", "tool_calls": [call]}, every_role()[1]]
    rendered = execute(go_template(), ollama_values(messages))
    assert '<TOOL:code_execution>{"code":"print(1 \\u003c 2)"}</TOOL>' in rendered
    assert rendered != render_chatml(messages)


def test_evaluator_follows_go_semantics() -> None:
    assert execute("a  {{- 1 -}}  b", {}) == "a1b"
    assert execute('{{ and 1 "" 2 }}|{{ or 0 "" "x" }}|{{ not .M }}', {"M": []}) == "|x|true"
    listing = "{{ range $i, $v := .L }}{{ $i }}={{ $v }};{{ end }}"
    assert execute(listing, {"L": ["a", "b"]}) == "0=a;1=b;"
    branch = "{{ len (slice .L 1) }}{{ if eq .L 3 }}!{{ else }}?{{ end }}"
    assert execute(branch, {"L": [1, 2]}) == "1?"
    with pytest.raises(TemplateError):
        execute("{{ if .X }}", {})


def test_modelfile_has_every_part() -> None:
    text = build_modelfile("thau-135m", adapter="/models/thau-135m-lora.gguf").render()
    parsed = parse_modelfile(text)
    assert parsed["from"] == "smollm2:135m"
    assert parsed["adapter"] == "/models/thau-135m-lora.gguf"
    params = parsed["parameters"]
    assert params["stop"] == ["<|im_start|>", "<|im_end|>"]
    assert "</TOOL>" not in params["stop"]
    assert {k: v[0] for k, v in params.items() if k != "stop"} == {
        "temperature": "0.2",
        "top_p": "0.9",
        "top_k": "40",
        "repeat_penalty": "1.0",
        "num_ctx": "4096",
    }
    registry = ToolRegistry.from_entry_points()
    assert parsed["system"] == system_prompt(list(registry), style="short")
    assert parsed["template"] == go_template()
    assert ".Tools" in parsed["template"] and ".ToolCalls" in parsed["template"]


def test_gemma_modelfile_runs_from_the_assembled_base_with_its_template() -> None:
    from thau.base_models import packaged_base_path

    parsed = parse_modelfile(build_modelfile("thau-270m", adapter="/m/a.gguf").render())
    assert parsed["from"] == str(packaged_base_path("gemma3-270m"))
    assert parsed["parameters"]["stop"] == ["<start_of_turn>", "<end_of_turn>"]
    assert parsed["template"] == go_template(GEMMA)
    shipped = parse_modelfile((modelfiles_dir() / "thau-270m.Modelfile").read_text("utf-8"))
    assert shipped["from"] == "gemma-3-270m-q4_k_m.gguf"  # `thau-export base` puts it there
    assert "Gemma Terms of Use" in preset_modelfile("thau-270m")


def test_modelfile_without_adapter_and_with_another_base() -> None:
    parsed = parse_modelfile(build_modelfile("thau-360m", from_="/m/base.gguf").render())
    assert parsed["from"] == "/m/base.gguf" and "adapter" not in parsed


def test_committed_modelfiles_are_up_to_date() -> None:
    for name in PRESETS:
        committed = modelfiles_dir() / f"{name}.Modelfile"
        assert committed.read_text("utf-8") == preset_modelfile(name), (
            f"{committed} is stale: run `thau-export modelfile --all`"
        )
        parsed = parse_modelfile(committed.read_text("utf-8"))
        assert parsed["adapter"] == f"../thau_chat/data/{name}-lora.gguf"


def test_rendered_elsewhere_the_adapter_path_points_back_to_the_package(tmp_path: Path) -> None:
    written = render_presets(tmp_path / "out")
    assert sorted(p.name for p in written) == sorted(f"{n}.Modelfile" for n in PRESETS)
    for path in written:
        adapter = parse_modelfile(path.read_text("utf-8"))["adapter"]
        resolved = (path.parent / adapter).resolve()
        assert resolved == shipped_adapters_dir().resolve() / f"{path.stem}-lora.gguf"


def test_cli_writes_a_modelfile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m" / "Modelfile"
    code = main(["modelfile", "--adapter", "a.gguf", "--from", "smollm2:135m", "--out", str(out)])
    assert code == 0 and parse_modelfile(out.read_text("utf-8"))["adapter"] == "a.gguf"
    assert main(["modelfile", "--preset", "thau-9b"]) == 1
    assert "No preset 'thau-9b'" in capsys.readouterr().err
