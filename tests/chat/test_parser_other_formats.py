"""The call formats of models that are not THAU's: Hermes tags, bare and fenced objects."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.chat.test_parser import calls_of, run, text_of
from thau.chat.parser import TextChunk, ToolCall, ToolCallError, ToolCallParser, ToolCallStart

SEARCH = {"name": "web_search", "arguments": {"query": "clima en Lima"}}
BODY = json.dumps(SEARCH)


def one_call(events: list[object]) -> ToolCall:
    (call,) = calls_of(events)
    assert isinstance(call, ToolCall)
    return call


# -- Hermes / Qwen ---------------------------------------------------------------------
def test_hermes_call_between_text() -> None:
    events = run([f"Busco.\n<tool_call>\n{BODY}\n</tool_call>\nListo."])
    call = one_call(events)
    assert (call.name, call.arguments, call.syntax) == ("web_search", SEARCH["arguments"], "hermes")
    assert text_of(events) == "Busco.\n\nListo."
    assert events.index(ToolCallStart("web_search")) < events.index(call)


def test_hermes_name_is_announced_while_the_arguments_stream() -> None:
    parser = ToolCallParser()
    assert parser.feed('<tool_call>{"name": "web_search", "argu') == [ToolCallStart("web_search")]
    assert calls_of(parser.feed('ments": {"query": "x"}}</tool_call>')) == [
        ToolCall(
            "web_search",
            {"query": "x"},
            '{"name": "web_search", "arguments": {"query": "x"}}',
            syntax="hermes",
        )
    ]


@pytest.mark.parametrize(
    "body",
    [
        '{"name": "web_search", "parameters": {"query": "x"}}',
        '{"name": "web_search", "arguments": "{\\"query\\": \\"x\\"}"}',
        '{"type": "function", "function": {"name": "web_search", "arguments": {"query": "x"}}}',
        "{'name': 'web_search', 'arguments': {'query': 'x',},}",
    ],
)
def test_hermes_variants_models_write(body: str) -> None:
    call = one_call(run([f"<tool_call>{body}</tool_call>"]))
    assert (call.name, call.arguments) == ("web_search", {"query": "x"})


def test_two_hermes_calls_and_a_missing_closing_tag() -> None:
    s = f"<tool_call>{BODY}</tool_call><tool_call>" + '{"name": "echo", "arguments": {}}'
    calls = calls_of(run([s]))
    assert [(c.name, c.closed) for c in calls if isinstance(c, ToolCall)] == [
        ("web_search", True),
        ("echo", True),
    ]


@pytest.mark.parametrize(
    ("body", "name", "says"),
    [
        ("", "tool_call", "empty <tool_call> body"),
        ("just words", "tool_call", "not a JSON object"),
        ('{"arguments": {}}', "tool_call", "names no tool"),
        ('{"name": "Web Search", "arguments": {}}', "Web Search", "is not a tool name"),
        ('{"name": "web_search", "arguments": [1, 2]}', "web_search", "not a JSON object"),
    ],
)
def test_a_bad_hermes_call_is_an_error_never_dropped(body: str, name: str, says: str) -> None:
    (error,) = calls_of(run([f"<tool_call>{body}</tool_call> after"]))
    assert isinstance(error, ToolCallError)
    assert error.name == name and says in error.error


# -- a bare object that is the whole reply ------------------------------------------------
@pytest.mark.parametrize("key", ["arguments", "parameters"])
def test_a_bare_call_object_that_is_the_whole_reply(key: str) -> None:
    reply = "\n  " + json.dumps({"name": "web_search", key: {"query": "x"}}) + "\n"
    call = one_call(run([reply]))
    assert (call.name, call.arguments, call.syntax) == ("web_search", {"query": "x"}, "json")
    assert text_of(run([reply])).strip() == ""


def test_a_call_to_an_unknown_name_is_still_a_call() -> None:
    call = one_call(run(['{"name": "search_the_web", "arguments": {"q": 1}}']))
    assert call.name == "search_the_web"


@pytest.mark.parametrize(
    "reply",
    [
        '{"name": "Ana", "age": 31}',  # a JSON answer that happens to have "name"
        '{"name": "ana", "arguments": {"x": 1}, "extra": true}',  # a third key
        '{"name": "Ana Pérez", "arguments": {}}',  # not a tool name
        '{"name": "web_search", "arguments": [1]}',  # arguments not an object
        '{"title": "x", "name": "web_search", "arguments": {}}',  # the first key rules it out
        '{"name": "web_search", "arguments": {"query": "x"}}\nThat is the call.',  # text after
        'The call: {"name": "web_search", "arguments": {"query": "x"}}',  # text before
        '{"name": "web_search", "arguments": {"query": "x"}',  # never closed
        '[{"name": "web_search", "arguments": {}}]',
        "{}",
    ],
)
def test_json_that_is_not_exactly_a_whole_reply_call_stays_text(reply: str) -> None:
    for chunks in ([reply], list(reply)):
        events = run(chunks)
        assert calls_of(events) == [] and text_of(events) == reply


def test_a_json_answer_is_shown_as_soon_as_its_first_key_rules_a_call_out() -> None:
    parser = ToolCallParser()
    assert text_of(parser.feed('{"city": "Lima", ')) == '{"city": "Lima", '
    parser = ToolCallParser()
    assert text_of(parser.feed('{"name": "Lima", ')) == ""  # still maybe a call
    assert text_of(parser.feed('"population": 10}')) == '{"name": "Lima", "population": 10}'


def test_thau_syntax_wins_after_a_json_preamble() -> None:
    events = run(['{"thought": "search"} <TOOL:web_search>{"query": "x"}</TOOL>'])
    call = one_call(events)
    assert (call.name, call.syntax) == ("web_search", "thau")
    assert text_of(events) == '{"thought": "search"} '


def test_other_formats_can_be_turned_off() -> None:
    for reply in (f"<tool_call>{BODY}</tool_call>", BODY, f"```json\n{BODY}\n```"):
        events = run([reply], other_formats=False)
        assert calls_of(events) == [] and text_of(events) == reply


# -- a fenced json block ----------------------------------------------------------------
def test_a_fenced_call_between_text() -> None:
    reply = f"Voy a buscar:\n```json\n{BODY}\n```\nUn momento."
    events = run([reply])
    call = one_call(events)
    assert (call.name, call.syntax) == ("web_search", "fenced")
    assert text_of(events) == "Voy a buscar:\n\nUn momento."


def test_a_fenced_call_cut_before_its_closing_fence_still_counts() -> None:
    call = one_call(run([f"```JSON\n{BODY}\n``"]))
    assert call.name == "web_search" and not call.closed


@pytest.mark.parametrize(
    "reply",
    [
        '```json\n{"name": "Ana", "age": 31}\n```',
        "```json\n[1, 2, 3]\n```",
        f"```python\n{BODY}\n```",
        f"```\n{BODY}\n```",
        f"```json\n{BODY}\nnot the end\n```",
        f"   ```json\n{BODY}\n```",  # indented: not a fence start here
        "text ```json\n" + BODY + "\n```",  # not at a line start
        "````json\n" + BODY + "\n````",
        "`inline` code and ``more``",
    ],
)
def test_fenced_blocks_that_are_not_a_call_stay_text(reply: str) -> None:
    for chunks in ([reply], list(reply)):
        events = run(chunks)
        assert calls_of(events) == [] and text_of(events) == reply


def test_a_thau_call_inside_a_json_fence_still_counts() -> None:
    events = run(['```json\n<TOOL:echo>{"text": "a"}</TOOL>\n```'])
    assert one_call(events).syntax == "thau"
    assert text_of(events) == "```json\n\n```"


# -- fuzz ---------------------------------------------------------------------------------
PIECES = [
    *"{}[]\"':,` \n\\<>/",
    "<tool_call>",
    "</tool_call>",
    "<TOOL:echo>",
    "</TOOL>",
    "```json\n",
    "```",
    '"name"',
    '"arguments"',
    '"parameters"',
    '"web_search"',
    '"Ana"',
    "é",
    "\x00",
]
garbage = st.lists(st.sampled_from(PIECES), max_size=40).map("".join)


def _chunked(s: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(s) + 1) for c in cuts})
    return [s[a:b] for a, b in zip([0, *points], [*points, len(s)], strict=True)]


@given(garbage, st.lists(st.integers(min_value=0, max_value=400), max_size=12))
@settings(max_examples=600, deadline=None)
def test_fuzz_any_mix_never_crashes_and_chunking_never_matters(s: str, cuts: list[int]) -> None:
    whole = run([s])
    split = run(_chunked(s, cuts))
    assert all(isinstance(e, TextChunk | ToolCallStart | ToolCall | ToolCallError) for e in split)
    assert calls_of(split) == calls_of(whole)
    assert text_of(split) == text_of(whole)
    if not calls_of(whole):  # nothing is swallowed: no call means all the text is shown
        assert text_of(whole) == s


names = st.from_regex(r"[a-z_][a-z0-9_]{0,12}", fullmatch=True)
scalars = st.one_of(st.integers(), st.booleans(), st.none(), st.text(max_size=20))
arguments = st.dictionaries(st.text(max_size=8), scalars, max_size=4)
prose = st.text(alphabet=st.characters(blacklist_characters="<`{"), max_size=40)


@given(
    names,
    arguments,
    st.sampled_from(["hermes", "json", "fenced"]),
    prose,
    prose,
    st.lists(st.integers(min_value=0, max_value=400), max_size=10),
)
@settings(max_examples=400, deadline=None)
def test_fuzz_a_written_call_is_found_whatever_surrounds_it(
    name: str, args: dict[str, Any], style: str, before: str, after: str, cuts: list[int]
) -> None:
    body = json.dumps({"name": name, "arguments": args}, ensure_ascii=False)
    if style == "hermes":
        s = f"{before}<tool_call>{body}</tool_call>{after}"
    elif style == "fenced":
        s = f"{before}\n```json\n{body}\n```\n{after}"
    else:  # the whole reply, so only whitespace around it
        s = f" \n{body}\n "
    (call,) = calls_of(run(_chunked(s, cuts)))
    assert isinstance(call, ToolCall)
    assert (call.name, call.arguments, call.syntax) == (name, args, style)


untagged = st.text(alphabet=st.characters(blacklist_characters="<"), max_size=10)
"""Text without "<": a tag in a JSON answer's strings is a call wherever it is."""
json_values = st.recursive(
    st.one_of(st.integers(), st.booleans(), st.none(), untagged),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(untagged, inner, max_size=3),
    max_leaves=8,
)


@given(st.dictionaries(untagged, json_values, max_size=5))
@settings(max_examples=300, deadline=None)
def test_fuzz_json_answers_without_the_call_shape_stay_text(value: dict[str, Any]) -> None:
    shaped = set(value) in ({"name", "arguments"}, {"name", "parameters"})
    if shaped:
        return
    for reply in (json.dumps(value), f"```json\n{json.dumps(value, indent=2)}\n```"):
        events = run([reply])
        assert calls_of(events) == [] and text_of(events) == reply
