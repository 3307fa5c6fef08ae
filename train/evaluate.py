"""Evaluate a model's tool-calling decisions through the runtime's own agent loop.

Each case is one JSON line::

    {"messages": [{"role": "user", "content": "Dibuja un gato"}],
     "expected_tool": "generate_image",            # or null: no tool should be called
     "expected_args_contain": {"prompt": ["cat"]},  # optional
     "lang": "es"}                                 # optional

A case may end with a tool result instead (the call and its ``tool`` message): then
``"expected_answer_contains": ["5050", ...]`` says what the answer must state (any one of
the strings, case-insensitive) and the reply counts as right only without a new call.

The model gets the case's messages exactly as ``thau-chat`` would send them (the
:class:`~thau.chat.agent.Agent` builds the system prompt and request, the backend and
the streaming parser are the runtime's), greedily (temperature 0). Only the first reply
counts: its decision is the first tool call in it, or none. Nothing is ever run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from thau.chat.agent import Agent, ToolFinished, ToolRequested, TurnDone
from thau.chat.backends import Selection
from thau.chat.backends.base import Backend
from thau.chat.config import Settings
from thau.chat.parser import ToolCall, ToolCallError
from thau.chat.session import build_session
from thau.errors import BackendUnavailable, ModelNotFound, ThauError, ToolError
from thau.jsonl import JsonlError, iter_jsonl
from thau.prompt_format import Message
from thau.tools.registry import ToolRegistry

NONE = "none"  # the label of "no tool" in the confusion matrix
UNKNOWN = "unknown_tool"  # the label of a call to a tool that does not exist
RATES = (
    "decision_accuracy",
    "tool_precision",
    "tool_recall",
    "false_tool_rate",
    "missed_tool_rate",
    "wrong_tool_rate",
    "json_valid_rate",
    "args_match_rate",
    "answer_match_rate",
)


class EvalError(ThauError):
    """The eval cases cannot be used."""


@dataclass(frozen=True)
class Case:
    messages: list[Message]
    expected_tool: str | None
    expected_args_contain: dict[str, list[str]] = field(default_factory=dict)
    lang: str | None = None
    expected_answer_contains: list[str] | None = None


@dataclass
class Outcome:
    """What the model did on one case."""

    index: int
    lang: str | None
    expected: str | None
    predicted: str | None  # the tool named by the first call, None when no call
    json_valid: bool | None = None  # the call's body was a strict JSON object
    args_valid: bool | None = None  # the arguments validate against the tool's model
    args_match: bool | None = None  # valid and containing the expected substrings
    arguments: dict[str, Any] | None = None
    reply: str = ""
    error: str | None = None  # a backend failure on this case
    answer_match: bool | None = None  # for cases with expected_answer_contains
    opening_probability: float | None = None  # the gate's measure of the first call

    @property
    def called(self) -> bool:
        return self.predicted is not None

    @property
    def right_tool(self) -> bool:
        return self.expected is not None and self.predicted == self.expected


# -- cases ---------------------------------------------------------------------------
def parse_case(value: Any) -> Case:
    """One case from its JSON value; ``ValueError`` says what is wrong."""
    if not isinstance(value, dict):
        raise ValueError("a case is a JSON object")
    messages = value.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list")
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or "role" not in m:
            raise ValueError("each message needs a role and a string content")
    expected = value.get("expected_tool")
    if expected is not None and not isinstance(expected, str):
        raise ValueError("expected_tool must be a tool name or null")
    contain: dict[str, list[str]] = {}
    for key, wanted in (value.get("expected_args_contain") or {}).items():
        items = [wanted] if isinstance(wanted, str) else wanted
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ValueError(f"expected_args_contain[{key!r}] must be a string or strings")
        contain[key] = items
    lang = value.get("lang")
    if lang is not None and not isinstance(lang, str):
        raise ValueError("lang must be a string")
    answer = value.get("expected_answer_contains")
    if answer is not None:
        if (
            not isinstance(answer, list)
            or not answer
            or not all(isinstance(a, str) and a for a in answer)
        ):
            raise ValueError("expected_answer_contains must be a list of non-empty strings")
        if expected is not None:
            raise ValueError("a case with expected_answer_contains expects no tool call")
    return Case(messages, expected, contain, lang, answer)


def load_cases(path: Path) -> list[Case]:
    """Cases of a JSONL file; a bad line raises ``EvalError`` naming it."""
    cases = []
    try:
        for number, value in iter_jsonl(path):
            try:
                cases.append(parse_case(value))
            except ValueError as exc:
                raise EvalError(f"{path}:{number}: {exc}") from None
    except OSError as exc:
        raise EvalError(f"Cannot read the cases file {path}: {exc.strerror}.") from None
    except JsonlError as exc:
        raise EvalError(str(exc)) from None
    if not cases:
        raise EvalError(f"{path} has no cases.")
    return cases


# -- running -------------------------------------------------------------------------
def make_agent(
    backend: Backend,
    registry: ToolRegistry | None = None,
    settings: Settings | None = None,
    *,
    max_tokens: int | None = 256,
) -> Agent:
    """The agent ``thau-chat`` would build around ``backend``, made greedy."""
    settings = settings or Settings()
    settings = settings.model_copy(update={"temperature": 0.0, "system": None, "no_tools": False})
    selection = Selection(backend, f"Using {backend.describe()}.")
    agent = build_session(settings, selection=selection, registry=registry).agent
    agent.options = replace(agent.options, temperature=0.0, max_tokens=max_tokens, seed=0)
    return agent


def _contains(arguments: dict[str, Any], wanted: dict[str, list[str]]) -> bool:
    for key, parts in wanted.items():
        if key not in arguments:
            return False
        value = arguments[key]
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if not all(part.casefold() in text.casefold() for part in parts):
            return False
    return True


def run_case(agent: Agent, case: Case, index: int = 0) -> Outcome:
    """The first decision of the model's first reply to ``case`` (no tool is run)."""
    outcome = Outcome(index, case.lang, case.expected_tool, None)
    conversation: list[Message] = [dict(m) for m in case.messages]  # type: ignore[misc]
    turn = agent.run_turn(conversation, None)
    try:
        for event in turn:
            if isinstance(event, ToolRequested):
                _judge_call(agent.registry, case, outcome, event.call)
                break
            if isinstance(event, ToolFinished) and isinstance(event.call, ToolCallError):
                outcome.predicted = event.call.name
                outcome.json_valid = outcome.args_valid = outcome.args_match = False
                break
            if isinstance(event, TurnDone):
                break
    except (BackendUnavailable, ModelNotFound):
        raise  # nothing else will work either
    except ThauError as exc:  # a failure on this case only: recorded, counted as no call
        outcome.error = str(exc)
    finally:
        turn.close()  # stops the model at the call; the agent never dispatches it
    replies = [m for m in conversation[len(case.messages) :] if m["role"] == "assistant"]
    if replies:
        outcome.reply = replies[0]["content"].removesuffix(" [interrupted]")
    decisions = getattr(agent.backend, "gate_log", None) or []
    opened = [d for d in decisions if d.opened]
    if decisions:  # the first opening the gate let through, else the first it refused
        outcome.opening_probability = (opened or decisions)[0].probability
    if case.expected_answer_contains is not None:  # a failed case did not answer
        wanted = case.expected_answer_contains
        outcome.answer_match = not outcome.error and answer_matches(outcome, wanted)
    return outcome


def answer_matches(outcome: Outcome, wanted: Sequence[str]) -> bool:
    """The reply holds one of ``wanted`` (case-insensitive) and makes no new call."""
    text = outcome.reply.casefold()
    return not outcome.called and any(w.casefold() in text for w in wanted)


def _judge_call(registry: ToolRegistry, case: Case, outcome: Outcome, call: ToolCall) -> None:
    outcome.predicted = call.name
    outcome.arguments = call.arguments
    outcome.json_valid = not call.repaired
    try:
        registry.validate(call.name, call.arguments)
        outcome.args_valid = True
    except ToolError:
        outcome.args_valid = False
    outcome.args_match = outcome.args_valid and _contains(
        call.arguments, case.expected_args_contain
    )


def evaluate(
    agent: Agent,
    cases: Sequence[Case],
    progress: Callable[[int, int, Outcome], None] | None = None,
) -> tuple[dict[str, Any], list[Outcome]]:
    """Run every case; returns the report (see :func:`report`) and each outcome."""
    known = set(agent.registry.names())
    for number, case in enumerate(cases, 1):
        if case.expected_tool is not None and case.expected_tool not in known:
            raise EvalError(f"case {number} expects {case.expected_tool!r}, which is not a tool")
    outcomes = []
    for index, case in enumerate(cases):
        outcomes.append(run_case(agent, case, index))
        if progress:
            progress(index + 1, len(cases), outcomes[-1])
    if all(o.error for o in outcomes):
        raise EvalError(f"Every case failed; the first error: {outcomes[0].error}")
    return report(outcomes, agent.registry.names()), outcomes


# -- metrics -------------------------------------------------------------------------
def _rate(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def _label(name: str | None, tools: Sequence[str]) -> str:
    if name is None:
        return NONE
    return name if name in tools else UNKNOWN


def confusion(outcomes: Iterable[Outcome], tools: Sequence[str]) -> dict[str, dict[str, int]]:
    """Counts ``expected -> predicted``; labels are tool names, ``none`` and
    ``unknown_tool`` (a call to a name that is not a tool). Every row has every column
    that occurs, zeros included."""
    outcomes = list(outcomes)
    pairs = [(_label(o.expected, tools), _label(o.predicted, tools)) for o in outcomes]
    seen = {label for pair in pairs for label in pair}
    order = [t for t in tools if t in seen] + [x for x in (NONE, UNKNOWN) if x in seen]
    rows = [label for label in order if any(e == label for e, _ in pairs)]
    matrix = {row: dict.fromkeys(order, 0) for row in rows}
    for expected, predicted in pairs:
        matrix[expected][predicted] += 1
    return matrix


def metrics(outcomes: Sequence[Outcome], tools: Sequence[str]) -> dict[str, Any]:
    """The rates of a set of outcomes. With T = cases expecting a tool, N = cases
    expecting none, C = cases where the model called any tool (an unknown name or a
    broken body counts as a call), R = cases where it called the expected tool:

    - ``decision_accuracy`` = (R + cases in N without a call) / n
    - ``tool_precision`` = R / C
    - ``tool_recall`` = R / T
    - ``false_tool_rate`` = cases in N with a call / N
    - ``missed_tool_rate`` = cases in T without a call / T
    - ``wrong_tool_rate`` = cases in T with a call of another tool / T
      (so recall + missed + wrong = 1)
    - ``json_valid_rate`` = calls whose body is a strict JSON object (no repair) / C
    - ``args_match_rate`` = cases in R whose arguments validate against the tool's model
      and contain every expected substring (case-insensitive) / R
    - ``answer_match_rate`` = cases with ``expected_answer_contains`` whose reply holds
      one of the strings and makes no new call / those cases

    A rate whose denominator is 0 is ``None`` (null), not 0.
    """
    expect_tool = [o for o in outcomes if o.expected is not None]
    expect_none = [o for o in outcomes if o.expected is None]
    calls = [o for o in outcomes if o.called]
    right = [o for o in expect_tool if o.right_tool]
    rightly_none = [o for o in expect_none if not o.called]
    answer_cases = [o for o in outcomes if o.answer_match is not None]
    return {
        "n": len(outcomes),
        "decision_accuracy": _rate(len(right) + len(rightly_none), len(outcomes)),
        "tool_precision": _rate(len(right), len(calls)),
        "tool_recall": _rate(len(right), len(expect_tool)),
        "false_tool_rate": _rate(sum(o.called for o in expect_none), len(expect_none)),
        "missed_tool_rate": _rate(sum(not o.called for o in expect_tool), len(expect_tool)),
        "wrong_tool_rate": _rate(
            sum(o.called and not o.right_tool for o in expect_tool), len(expect_tool)
        ),
        "json_valid_rate": _rate(sum(bool(o.json_valid) for o in calls), len(calls)),
        "args_match_rate": _rate(sum(bool(o.args_match) for o in right), len(right)),
        "answer_match_rate": _rate(
            sum(bool(o.answer_match) for o in answer_cases), len(answer_cases)
        ),
        "confusion": confusion(outcomes, tools),
    }


GATE_THRESHOLDS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def gate_curve(
    outcomes: Sequence[Outcome], thresholds: Sequence[float] = GATE_THRESHOLDS
) -> list[dict[str, Any]]:
    """False and missed tool rates if calls opening below each threshold were refused.

    Read from a run with the gate measuring only (``tool_gate`` 0): a refused call counts
    as no call. It is an estimate (after a refusal the model may open a call later in
    the reply); a run with the chosen ``tool_gate`` gives the real figures.
    """
    expect_tool = [o for o in outcomes if o.expected is not None]
    expect_none = [o for o in outcomes if o.expected is None]

    def kept(o: Outcome, threshold: float) -> bool:
        p = o.opening_probability
        return o.called and (p is None or p >= threshold)

    return [
        {
            "threshold": t,
            "false_tool_rate": _rate(sum(kept(o, t) for o in expect_none), len(expect_none)),
            "missed_tool_rate": _rate(sum(not kept(o, t) for o in expect_tool), len(expect_tool)),
            "right_tool_rate": _rate(
                sum(kept(o, t) and o.right_tool for o in expect_tool), len(expect_tool)
            ),
        }
        for t in thresholds
    ]


def report(outcomes: Sequence[Outcome], tools: Sequence[str]) -> dict[str, Any]:
    """``n``, the rates of :func:`metrics`, ``by_lang`` (the same per language, for cases
    that give one) and ``confusion``."""
    overall = metrics(outcomes, tools)
    langs = sorted({o.lang for o in outcomes if o.lang})
    by_lang = {lang: metrics([o for o in outcomes if o.lang == lang], tools) for lang in langs}
    out: dict[str, Any] = {"n": overall["n"]}
    out.update({key: overall[key] for key in RATES})
    out["by_lang"] = by_lang
    out["confusion"] = overall["confusion"]
    if any(o.opening_probability is not None for o in outcomes):
        out["gate_curve"] = gate_curve(outcomes)
    return out


# -- output --------------------------------------------------------------------------
def confusion_png(matrix: dict[str, dict[str, int]], path: Path, title: str = "") -> Path:
    """Draw the confusion matrix (rows expected, columns predicted) as a PNG."""
    from matplotlib.figure import Figure

    rows = list(matrix)
    cols = list(next(iter(matrix.values()), {}))
    values = [[matrix[r][c] for c in cols] for r in rows]
    fig = Figure(figsize=(1.6 + 1.3 * len(cols), 1.2 + 0.8 * len(rows)), layout="constrained")
    ax = fig.subplots()
    ax.imshow(values or [[0]], cmap="Blues")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("predicted")
    ax.set_ylabel("expected")
    top = max((v for row in values for v in row), default=0)
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            color = "white" if top and value > top / 2 else "black"
            ax.text(j, i, str(value), ha="center", va="center", color=color)
    if title:
        ax.set_title(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def write_outputs(
    result: dict[str, Any], outcomes: Sequence[Outcome], out_dir: Path, name: str, title: str
) -> list[Path]:
    """``NAME.json`` (the report), ``NAME-confusion.png`` and ``NAME-cases.jsonl``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report_path = out_dir / f"{name}.json"
    report_path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", "utf-8")
    png = confusion_png(result["confusion"], out_dir / f"{name}-confusion.png", title)
    cases_path = out_dir / f"{name}-cases.jsonl"
    lines = [json.dumps(asdict(o), ensure_ascii=False) + "\n" for o in outcomes]
    cases_path.write_text("".join(lines), "utf-8")
    return [report_path, png, cases_path]


def format_report(result: dict[str, Any]) -> str:
    """A short text table of the report."""

    def fmt(value: float | None) -> str:
        return "  n/a" if value is None else f"{value:5.1%}"

    langs = list(result["by_lang"])
    lines = [f"{'':18}{'all':>8}" + "".join(f"{lang:>8}" for lang in langs)]
    counts = "".join(f"{result['by_lang'][x]['n']:>8}" for x in langs)
    lines.append(f"{'cases':18}{result['n']:>8}{counts}")
    for key in RATES:
        cells = "".join(f"{fmt(result['by_lang'][x][key]):>8}" for x in langs)
        lines.append(f"{key:18}{fmt(result[key]):>8}{cells}")
    lines.append("confusion (expected -> predicted):")
    for expected, row in result["confusion"].items():
        cells = ", ".join(f"{k} {v}" for k, v in row.items() if v)
        lines.append(f"  {expected:16} {cells}")
    return "\n".join(lines)
