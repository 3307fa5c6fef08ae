"""The streaming <TOOL:name>{json}</TOOL> parser."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from thau.chat.parser import TextChunk, ToolCall, ToolCallError, ToolCallParser, ToolCallStart
from thau.prompt_format import format_tool_call


def run(chunks: list[str], **kwargs: Any) -> list[object]:
    """Feed ``chunks`` to a parser (``kwargs``: its options) and close it."""
    parser = ToolCallParser(**kwargs)
    events: list[object] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events + parser.close()


def text_of(events: list[object]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextChunk))


def calls_of(events: list[object]) -> list[object]:
    return [e for e in events if isinstance(e, ToolCall | ToolCallError)]


def test_text_only_passes_through() -> None:
    events = run(["Hola, ", "¿qué tal? 3 < 4 and <b>bold</b>"])
    assert text_of(events) == "Hola, ¿qué tal? 3 < 4 and <b>bold</b>"
    assert calls_of(events) == []


def test_one_call_between_text() -> None:
    events = run(['Voy a buscar. <TOOL:web_search>{"query": "clima"}</TOOL> Listo'])
    assert text_of(events) == "Voy a buscar.  Listo"
    assert calls_of(events) == [ToolCall("web_search", {"query": "clima"}, '{"query": "clima"}')]
    assert ToolCallStart("web_search") in events


def test_several_calls_in_order() -> None:
    s = format_tool_call("a", {"x": 1}) + "\n" + format_tool_call("b_2", {"y": [1, {"z": "}"}]})
    calls = calls_of(run([s]))
    assert [(c.name, c.arguments) for c in calls] == [
        ("a", {"x": 1}),
        ("b_2", {"y": [1, {"z": "}"}]}),
    ]


def test_call_dispatched_as_soon_as_body_closes() -> None:
    parser = ToolCallParser()
    assert calls_of(parser.feed('<TOOL:echo>{"text": "hi"')) == []
    events = parser.feed("}")
    assert calls_of(events) == [ToolCall("echo", {"text": "hi"}, '{"text": "hi"}')]


def test_missing_closing_tag_at_end_still_counts() -> None:
    calls = calls_of(run(['<TOOL:web_search>{"query": "x"}']))
    assert calls == [ToolCall("web_search", {"query": "x"}, '{"query": "x"}')]


def test_unclosed_body_at_end_is_repaired() -> None:
    (call,) = calls_of(run(['<TOOL:generate_image>{"prompt": "a cat']))
    assert isinstance(call, ToolCall)
    assert call.arguments == {"prompt": "a cat"}
    assert call.repaired and not call.closed


def test_near_json_is_repaired() -> None:
    body = "{'code': 'print(1)', 'language': 'python',}"
    (call,) = calls_of(run([f"<TOOL:code_execution>{body}</TOOL>"]))
    assert isinstance(call, ToolCall) and call.repaired
    assert call.arguments == {"code": "print(1)", "language": "python"}


def test_unescaped_newline_in_string_is_repaired() -> None:
    (call,) = calls_of(run(['<TOOL:code_execution>{"code": "x = 1\nprint(x)"}</TOOL>']))
    assert isinstance(call, ToolCall)
    assert call.arguments == {"code": "x = 1\nprint(x)"}


def test_non_object_body_is_a_structured_error() -> None:
    (err,) = calls_of(run(["<TOOL:web_search>just some words</TOOL> after"]))
    assert isinstance(err, ToolCallError)
    assert err.name == "web_search" and "JSON object" in err.error
    assert text_of(run(["<TOOL:web_search>just some words</TOOL> after"])) == " after"


def test_empty_body_is_an_error() -> None:
    (err,) = calls_of(run(["<TOOL:web_search></TOOL>"]))
    assert isinstance(err, ToolCallError) and "empty" in err.error


def test_invalid_name_is_plain_text() -> None:
    events = run(["<TOOL:Bad Name>{}</TOOL>"])
    assert calls_of(events) == []
    assert text_of(events) == "<TOOL:Bad Name>{}</TOOL>"


def test_partial_close_tag_eaten_by_stop_sequence() -> None:
    events = run(['<TOOL:echo>{"text": "a"}</TO'])
    assert text_of(events) == ""
    assert len(calls_of(events)) == 1


def test_text_right_after_body_without_close_tag() -> None:
    events = run(['<TOOL:echo>{"text": "a"} and more'])
    assert text_of(events) == " and more"


def test_incomplete_tag_at_end_is_text() -> None:
    assert text_of(run(["hello <TOOL:web"])) == "hello <TOOL:web"
    assert text_of(run(["hello <TO"])) == "hello <TO"


SAMPLE = (
    'Claro. <TOOL:web_search>{"query": "noticias {hoy}", "max_results": 3}</TOOL>'
    " texto <i>x</i> <TOOL:code_execution>{'code': \"print('}')\",}</TOOL>"
    '<TOOL:echo>  {"text": "a\\"b"}\n</TOOL>< <TOOL:generate_image>{"prompt": "cat'
)


@given(st.lists(st.integers(min_value=1, max_value=len(SAMPLE) - 1), max_size=40))
@settings(max_examples=300, deadline=None)
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [SAMPLE[a:b] for a, b in zip([0, *points], [*points, len(SAMPLE)], strict=True)]
    whole = run([SAMPLE])
    split = run(chunks)
    assert calls_of(split) == calls_of(whole)
    assert text_of(split) == text_of(whole)
    assert len(calls_of(whole)) == 4


pieces = st.sampled_from([*"<>/{}[]\"'\\:,TOLabc_ \n", "<TOOL:", "</TOOL>", "é", "\x00"])
garbage = st.lists(pieces, max_size=12).map("".join)


@given(st.lists(garbage, max_size=30))
@settings(max_examples=400, deadline=None)
def test_garbage_never_crashes_and_chunking_is_invariant(chunks: list[str]) -> None:
    events = run(chunks)
    joined = run(["".join(chunks)])
    assert calls_of(events) == calls_of(joined)
    assert text_of(events) == text_of(joined)


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_arbitrary_unicode_never_crashes(s: str) -> None:
    events = run([s[: len(s) // 2], s[len(s) // 2 :]])
    assert all(isinstance(e, TextChunk | ToolCallStart | ToolCall | ToolCallError) for e in events)
    assert text_of(events) == text_of(run([s]))
