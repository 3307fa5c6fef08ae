"""The SQLite queue: both example formats, duplicates, statuses, JSONL import errors."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from thau.train_queue import ExampleStore, InvalidExample, normalize, parse_jsonl


def test_instruction_and_messages_formats_become_chats() -> None:
    e = normalize({"instruction": "Sum 2 and 3", "input": "as words", "output": "five"})
    assert e.messages == [
        {"role": "user", "content": "Sum 2 and 3\n\nas words"},
        {"role": "assistant", "content": "five"},
    ]
    assert (e.instruction, e.input, e.output) == ("Sum 2 and 3", "as words", "five")
    native = {"name": "code_execution", "arguments": {"code": "print(1)"}}
    chat = normalize(
        {
            "messages": [
                {"role": "user", "content": "run print(1)"},
                {"role": "assistant", "content": None, "tool_calls": [native]},
            ],
            "metadata": {"source": "api"},
        }
    )
    assert chat.messages[1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [native],
    }
    assert chat.metadata == {"source": "api"} and chat.instruction is None


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ([1, 2], "JSON object"),
        ({"instruction": "q"}, "instruction and output"),
        ({"instruction": " ", "output": "a"}, "instruction must be a non-empty string"),
        ({"instruction": "q", "output": "a", "messages": []}, "not both"),
        ({"messages": []}, "non-empty list"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "last message"),
        ({"messages": [{"role": "boss", "content": "x"}]}, "role must be one of"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "need a user"),
        ({"instruction": "q", "output": "a", "metadata": [1]}, "metadata"),
        ({"instruction": "q" * 20_001, "output": "a"}, "longer than"),
    ],
)
def test_bad_records_are_refused_with_the_reason(record: object, message: str) -> None:
    with pytest.raises(InvalidExample, match=message):
        normalize(record)


def test_duplicates_are_dropped_by_content_hash(tmp_path: Path) -> None:
    store = ExampleStore(tmp_path / "q.db")
    a = normalize({"instruction": "What is 2+2?", "output": "4"})
    same_as_chat = normalize(
        {
            "messages": [
                {"role": "user", "content": "What is 2+2?"},
                {"role": "assistant", "content": "4"},
            ]
        }
    )
    first, new = store.add(a)
    assert new and store.add(same_as_chat) == (first, False)
    result = store.add_many([normalize({"instruction": "x", "output": "y"}), a, a])
    assert result.added == 1 and result.duplicates == 2
    assert store.counts() == {"pending": 2, "training": 0, "trained": 0, "rejected": 0}
    mode = sqlite3.connect(tmp_path / "q.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_statuses_move_by_run_and_a_crash_requeues(tmp_path: Path) -> None:
    store = ExampleStore(tmp_path / "q.db")
    store.add_many(normalize({"instruction": f"q{i}", "output": "a"}) for i in range(3))
    claimed = store.claim("run-1")
    assert [s.status for s in claimed] == ["training"] * 3
    assert store.counts()["training"] == 3 and store.select("pending") == []
    store.add(normalize({"instruction": "late", "output": "a"}))  # arrives while training
    assert store.finish("run-1", "rejected", "regressed") == 3
    rejected = store.select("rejected")
    assert {r.note for r in rejected} == {"regressed"}
    assert [r.example.instruction for r in store.select("pending")] == ["late"]
    store.claim("run-2")
    store.close()
    reopened = ExampleStore(tmp_path / "q.db")  # as after a kill: rows stay 'training'
    assert reopened.counts()["training"] == 1
    assert reopened.requeue_training() == 1 and reopened.counts()["pending"] == 1


def test_jsonl_errors_carry_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    lines = [
        json.dumps({"instruction": "a", "output": "b"}),
        "{not json",
        "",
        json.dumps({"messages": [{"role": "user", "content": "hi"}]}),
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "yo"},
                ]
            }
        ),
    ]
    path.write_text("\n".join(lines) + "\n", "utf-8")
    examples, errors = parse_jsonl(path)
    assert len(examples) == 2
    assert [line for line, _ in errors] == [2, 4]
    assert "not JSON" in errors[0][1] and "last message" in errors[1][1]
