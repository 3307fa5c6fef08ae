"""The evaluator's metrics, on scripted model replies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.scripted import ScriptedBackend
from thau.chat import backends
from thau.errors import StreamInterrupted
from thau.prompt_format import system_prompt
from thau.tools.registry import ToolRegistry
from thau.train import evaluate
from thau.train.cli import main
from thau.train.dataset import builtin_registry

REPORT_KEYS = {
    "n",
    "decision_accuracy",
    "tool_precision",
    "tool_recall",
    "false_tool_rate",
    "missed_tool_rate",
    "wrong_tool_rate",
    "json_valid_rate",
    "args_match_rate",
    "answer_match_rate",
    "by_lang",
    "confusion",
}

# (expected tool, expected_args_contain, lang, the scripted reply as streamed chunks)
SCRIPT: list[tuple[str | None, dict[str, Any], str, list[str]]] = [
    # 1 right tool, strict JSON, args match
    (
        "generate_image",
        {"prompt": ["CAT", "moon"]},
        "es",
        ["<TOOL:gen", 'erate_image>{"prompt": "a ', 'cat on the moon"}</TOOL>'],
    ),
    # 2 right tool, args miss the expected word
    ("generate_image", {"prompt": "cat"}, "es", ['<TOOL:generate_image>{"prompt": "un gato"}']),
    # 3 wrong tool
    ("code_execution", {}, "es", ['Searching. <TOOL:web_search>{"query": "x"}</TOOL>']),
    # 4 missed
    ("web_search", {}, "es", ["I don't know, sorry."]),
    # 5 right tool, repaired JSON, valid args
    ("web_search", {}, "es", ["<TOOL:web_search>{'query': 'news',}</TOOL>"]),
    # 6 rightly none
    (None, {}, "en", ["Hello! How can I help?"]),
    # 7 false call
    (None, {}, "en", ['<TOOL:code_execution>{"code": "print(1)"}</TOOL>']),
    # 8 false call of a tool that does not exist
    (None, {}, "en", ['<TOOL:name>{"arg": "value"}</TOOL>']),
    # 9 right tool, body not a JSON object; a second call after it does not count
    (
        "code_execution",
        {},
        "en",
        ['<TOOL:code_execution>[1, 2]</TOOL><TOOL:web_search>{"query": "a"}'],
    ),
    # 10 right tool, invalid arguments
    ("generate_image", {}, "en", ['<TOOL:generate_image>{"prompt": "x", "width": 5000}</TOOL>']),
]


@pytest.fixture(scope="module")
def registry() -> ToolRegistry:
    return builtin_registry()


def cases() -> list[evaluate.Case]:
    return [
        evaluate.parse_case(
            {
                "messages": [{"role": "user", "content": f"case {i}"}],
                "expected_tool": tool,
                "expected_args_contain": contain,
                "lang": lang,
            }
        )
        for i, (tool, contain, lang, _) in enumerate(SCRIPT, 1)
    ]


def run_script(registry: ToolRegistry) -> tuple[dict, list[evaluate.Outcome], ScriptedBackend]:
    backend = ScriptedBackend([reply for *_, reply in SCRIPT])
    agent = evaluate.make_agent(backend, registry)
    result, outcomes = evaluate.evaluate(agent, cases())
    return result, outcomes, backend


def test_metrics_on_scripted_replies(registry: ToolRegistry) -> None:
    result, outcomes, _ = run_script(registry)
    assert set(result) == REPORT_KEYS
    # T = cases 1-5, 9, 10 (7); N = 6-8 (3); calls C = all but 4 and 6 (8);
    # right tool R = 1, 2, 5, 9, 10 (5)
    assert result["n"] == 10
    assert result["decision_accuracy"] == 0.6  # (5 + 1) / 10
    assert result["tool_precision"] == 0.625  # 5 / 8
    assert result["tool_recall"] == round(5 / 7, 4)
    assert result["false_tool_rate"] == round(2 / 3, 4)
    assert result["missed_tool_rate"] == round(1 / 7, 4)
    assert result["wrong_tool_rate"] == round(1 / 7, 4)
    assert result["json_valid_rate"] == 0.75  # strict JSON: 1, 2, 3, 7, 8, 10
    assert result["args_match_rate"] == 0.4  # 1 and 5 of R
    assert [o.predicted for o in outcomes] == [
        "generate_image",
        "generate_image",
        "web_search",
        None,
        "web_search",
        None,
        "code_execution",
        "name",
        "code_execution",
        "generate_image",
    ]
    assert outcomes[4].json_valid is False and outcomes[4].args_match is True
    assert outcomes[9].args_valid is False
    assert outcomes[2].reply.startswith("Searching. <TOOL:web_search>")
    assert outcomes[3].reply == "I don't know, sorry."


def test_confusion_and_languages(registry: ToolRegistry) -> None:
    result, _, _ = run_script(registry)
    assert result["confusion"] == {
        "code_execution": {
            "code_execution": 1,
            "generate_image": 0,
            "web_search": 1,
            "none": 0,
            "unknown_tool": 0,
        },
        "generate_image": {
            "code_execution": 0,
            "generate_image": 3,
            "web_search": 0,
            "none": 0,
            "unknown_tool": 0,
        },
        "web_search": {
            "code_execution": 0,
            "generate_image": 0,
            "web_search": 1,
            "none": 1,
            "unknown_tool": 0,
        },
        "none": {
            "code_execution": 1,
            "generate_image": 0,
            "web_search": 0,
            "none": 1,
            "unknown_tool": 1,
        },
    }
    es, en = result["by_lang"]["es"], result["by_lang"]["en"]
    assert set(es) == set(en) == REPORT_KEYS - {"by_lang"}
    # es: cases 1-5, all expect a tool; R = 1, 2, 5; calls = 1, 2, 3, 5
    assert es["n"] == 5 and es["decision_accuracy"] == 0.6
    assert es["tool_precision"] == 0.75 and es["tool_recall"] == 0.6
    assert es["false_tool_rate"] is None  # no case expects none
    assert es["missed_tool_rate"] == 0.2 and es["wrong_tool_rate"] == 0.2
    assert es["json_valid_rate"] == 0.75 and es["args_match_rate"] == round(2 / 3, 4)
    # en: 6-8 expect none, 9-10 expect a tool; calls = 7, 8, 9, 10; R = 9, 10
    assert en["n"] == 5 and en["decision_accuracy"] == 0.6
    assert en["tool_precision"] == 0.5 and en["tool_recall"] == 1.0
    assert en["false_tool_rate"] == round(2 / 3, 4) and en["missed_tool_rate"] == 0.0
    assert en["json_valid_rate"] == 0.75 and en["args_match_rate"] == 0.0


def test_the_model_sees_what_thau_chat_sends(registry: ToolRegistry) -> None:
    _, _, backend = run_script(registry)
    assert len(backend.requests) == len(SCRIPT)  # first reply only, no tool ever ran
    short = system_prompt(list(registry), style="short")
    for number, request in enumerate(backend.requests, 1):
        assert request["messages"] == [
            {"role": "system", "content": short},
            {"role": "user", "content": f"case {number}"},
        ]
        assert request["options"].temperature == 0.0
        assert request["tools"] is None


def test_empty_denominators_are_null(registry: ToolRegistry) -> None:
    backend = ScriptedBackend([["Hi!"], ["Sure."]])
    agent = evaluate.make_agent(backend, registry)
    plain = [evaluate.Case([{"role": "user", "content": t}], None) for t in ("hi", "ok")]
    result, _ = evaluate.evaluate(agent, plain)
    assert result["decision_accuracy"] == 1.0 and result["false_tool_rate"] == 0.0
    for key in (
        "tool_precision",
        "tool_recall",
        "missed_tool_rate",
        "wrong_tool_rate",
        "json_valid_rate",
        "args_match_rate",
    ):
        assert result[key] is None, key
    assert result["by_lang"] == {}
    assert result["confusion"] == {"none": {"none": 2}}


def test_earlier_turns_are_sent_and_a_backend_failure_is_no_call(registry: ToolRegistry) -> None:
    history = [
        {"role": "user", "content": "Hola"},
        {"role": "assistant", "content": "¡Hola!"},
        {"role": "user", "content": "Dibuja un gato"},
    ]
    backend = ScriptedBackend(
        [["<TOOL:generate_image>", StreamInterrupted("stream broke")], ["Vale."]]
    )
    agent = evaluate.make_agent(backend, registry)
    cases_ = [evaluate.Case(history, "generate_image"), evaluate.Case(history[:1], None)]
    result, outcomes = evaluate.evaluate(agent, cases_)
    assert backend.requests[0]["messages"][1:] == history
    assert outcomes[0].error == "stream broke" and outcomes[0].predicted is None
    assert result["missed_tool_rate"] == 1.0 and result["decision_accuracy"] == 0.5


def test_every_case_failing_is_an_error(registry: ToolRegistry) -> None:
    backend = ScriptedBackend([[StreamInterrupted("down")]])
    agent = evaluate.make_agent(backend, registry)
    with pytest.raises(evaluate.EvalError, match="Every case failed"):
        evaluate.evaluate(agent, [evaluate.Case([{"role": "user", "content": "x"}], None)])


def test_unknown_expected_tool_is_refused(registry: ToolRegistry) -> None:
    agent = evaluate.make_agent(ScriptedBackend([]), registry)
    case = evaluate.Case([{"role": "user", "content": "x"}], "paint")
    with pytest.raises(evaluate.EvalError, match="'paint'"):
        evaluate.evaluate(agent, [case])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{oops", "2:"),
        ('{"expected_tool": null}', "messages must be"),
        ('{"messages": [{"role": "user"}], "expected_tool": null}', "string content"),
        ('{"messages": [{"role": "user", "content": "x"}], "expected_tool": 3}', "tool name"),
        (
            '{"messages": [{"role": "user", "content": "x"}], "expected_tool": null, '
            '"expected_args_contain": {"prompt": [1]}}',
            "expected_args_contain",
        ),
    ],
)
def test_bad_case_lines_are_named(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "cases.jsonl"
    good = '{"messages": [{"role": "user", "content": "hi"}], "expected_tool": null}'
    path.write_text(f"{good}\n{line}\n", "utf-8")
    with pytest.raises(evaluate.EvalError, match=message):
        evaluate.load_cases(path)


def test_outputs_report_png_and_cases(registry: ToolRegistry, tmp_path: Path) -> None:
    result, outcomes, _ = run_script(registry)
    paths = evaluate.write_outputs(result, outcomes, tmp_path / "out", "scripted", "a title")
    report, png, case_file = paths
    assert json.loads(report.read_text("utf-8")) == result
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
    lines = [json.loads(x) for x in case_file.read_text("utf-8").splitlines()]
    assert [x["predicted"] for x in lines] == [o.predicted for o in outcomes]
    text = evaluate.format_report(result)
    assert "decision_accuracy" in text and " 60.0%" in text


def test_cli_eval_through_a_backend(
    registry: ToolRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "cases.jsonl"
    lines = [
        {"messages": [{"role": "user", "content": "Draw a fox"}], "expected_tool": "generate_image",
         "expected_args_contain": {"prompt": ["fox"]}, "lang": "en"},
        {"messages": [{"role": "user", "content": "Hola"}], "expected_tool": None, "lang": "es"},
    ]  # fmt: skip
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), "utf-8")
    backend = ScriptedBackend([['<TOOL:generate_image>{"prompt": "a red fox"}</TOOL>'], ["¡Hola!"]])
    seen: dict[str, Any] = {}

    def fake_create_backend(settings: Any) -> backends.Selection:
        seen["settings"] = settings
        return backends.Selection(backend, "scripted")

    monkeypatch.setattr(backends, "create_backend", fake_create_backend)
    argv = ["eval", "--cases", str(path), "--json", "--out", str(tmp_path), "--name", "r", "-q"]
    assert main([*argv, "--model", "m.gguf"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == REPORT_KEYS
    assert printed["decision_accuracy"] == 1.0 and printed["args_match_rate"] == 1.0
    assert seen["settings"].backend == "embedded" and seen["settings"].model == "m.gguf"
    assert (tmp_path / "r.json").is_file() and (tmp_path / "r-confusion.png").is_file()
    assert main(["eval", "--cases", str(tmp_path / "missing.jsonl")]) == 1
    assert "Cannot read the cases file" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "at_least"), [("dev", 100), ("holdout", 80)])
def test_the_shipped_eval_sets_cover_each_tool_language_and_no_tool(
    name: str, at_least: int
) -> None:
    from thau.resources import eval_dir

    cases = evaluate.load_cases(eval_dir() / f"{name}.jsonl")
    assert len(cases) >= at_least
    tools = {"generate_image", "code_execution", "web_search", None}
    for lang in ("es", "en"):
        mine = [c for c in cases if c.lang == lang]
        assert {c.expected_tool for c in mine} == tools, lang
    without = sum(c.expected_tool is None for c in cases)
    assert 0.4 <= without / len(cases) <= 0.6  # about half need no tool


def test_the_holdout_set_asks_nothing_the_dev_set_asks() -> None:
    from thau.resources import eval_dir
    from thau.train.dataset import _norm

    def asked(name: str) -> set[str]:
        cases = evaluate.load_cases(eval_dir() / f"{name}.jsonl")
        return {_norm(c.messages[-1]["content"]) for c in cases}

    assert asked("holdout").isdisjoint(asked("dev"))


def answer_case(wanted: list[str], lang: str = "en") -> dict[str, Any]:
    """A case that ends with a code result: the reply must state it."""
    result = '{"tool":"code_execution","ok":true,"result":{"stdout":"5050\\n","exit_code":0}}'
    return {
        "messages": [
            {"role": "user", "content": "Run sum(range(101))"},
            {"role": "assistant", "content": '<TOOL:code_execution>{"code": "print(5050)"}</TOOL>'},
            {"role": "tool", "content": result, "tool_name": "code_execution"},
        ],
        "expected_tool": None,
        "expected_answer_contains": wanted,
        "lang": lang,
    }


def test_answers_after_a_result_are_matched(registry: ToolRegistry) -> None:
    replies = [
        ["The sum is 5050."],  # right
        ["La suma es ", "5050", "."],  # right, any of the strings, other language
        ["I'll run it now."],  # does not state it
        ['The sum is 5050. <TOOL:code_execution>{"code": "print(1)"}</TOOL>'],  # calls again
    ]
    raw = [answer_case(["5050"]), answer_case(["nothing", "5050"], "es"), answer_case(["5050"])]
    raw.append(answer_case(["5050"]))
    cases = [evaluate.parse_case(c) for c in raw]
    agent = evaluate.make_agent(ScriptedBackend(replies), registry)
    result, outcomes = evaluate.evaluate(agent, cases)
    assert [o.answer_match for o in outcomes] == [True, True, False, False]
    assert result["answer_match_rate"] == 0.5
    assert result["by_lang"]["es"]["answer_match_rate"] == 1.0
    sent = agent.backend.requests[0]["messages"]
    assert sent[-1]["role"] == "tool"  # the model saw the result, not a new request
    run_result, _, _ = run_script(registry)
    assert run_result["answer_match_rate"] is None  # no case asks for an answer


@pytest.mark.parametrize(
    "bad",
    [[], [""], "5050", [5050]],
)
def test_expected_answer_contains_must_be_strings(bad: Any) -> None:
    with pytest.raises(ValueError, match="expected_answer_contains"):
        evaluate.parse_case({**answer_case(["x"]), "expected_answer_contains": bad})
    with pytest.raises(ValueError, match="expects no tool call"):
        evaluate.parse_case({**answer_case(["x"]), "expected_tool": "web_search"})


def test_the_gate_curve_counts_refused_openings_as_no_call() -> None:
    outcomes = [
        evaluate.Outcome(0, "en", "web_search", "web_search", opening_probability=0.95),
        evaluate.Outcome(1, "en", "web_search", "web_search", opening_probability=0.55),
        evaluate.Outcome(2, "en", None, "generate_image", opening_probability=0.45),
        evaluate.Outcome(3, "en", None, None),
    ]
    curve = {row["threshold"]: row for row in evaluate.gate_curve(outcomes, [0.0, 0.5, 0.9])}
    assert curve[0.0]["false_tool_rate"] == 0.5 and curve[0.0]["missed_tool_rate"] == 0.0
    assert curve[0.5]["false_tool_rate"] == 0.0 and curve[0.5]["missed_tool_rate"] == 0.0
    assert curve[0.9]["missed_tool_rate"] == 0.5 and curve[0.9]["right_tool_rate"] == 0.5
