"""The dataset builder, its validator and its stats."""

from __future__ import annotations

import copy
import json
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from thau.chat.parser import ToolCall, ToolCallParser
from thau.prompt_format import (
    format_tool_call,
    format_tool_result,
    render_chatml,
    system_prompt,
)
from thau.resources import eval_dir
from thau.tools.registry import ToolRegistry
from thau.train import dataset
from thau.train.cli import main


@pytest.fixture(scope="module")
def registry() -> ToolRegistry:
    return dataset.builtin_registry()


@pytest.fixture(scope="module")
def built(registry: ToolRegistry) -> dataset.Dataset:
    return dataset.build(registry=registry)


@pytest.fixture(scope="module")
def system(registry: ToolRegistry) -> str:
    return system_prompt(list(registry), style="short")


def example(system: str, *turns: dict[str, Any], template: str = "t/one", **kw: Any) -> dict:
    messages = [{"role": "system", "content": system}, *turns]
    base = {"id": f"{template}-01", "template": template, "lang": "en", "kind": "x"}
    base |= {"tool": None, "multi_turn": any(m["role"] == "tool" for m in messages)}
    return base | kw | {"messages": messages}


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


# -- the committed dataset -------------------------------------------------------------
def test_committed_files_are_what_the_builder_makes(built: dataset.Dataset) -> None:
    for name, part in (("train", built.train), ("valid", built.valid)):
        committed = (dataset.out_dir() / f"{name}.jsonl").read_text("utf-8")
        assert committed == dataset.dumps_jsonl(part), f"{name}.jsonl is stale: rebuild it"


def test_build_is_deterministic(registry: ToolRegistry, built: dataset.Dataset) -> None:
    again = dataset.build(registry=registry)
    assert dataset.dumps_jsonl(again.train) == dataset.dumps_jsonl(built.train)
    assert dataset.dumps_jsonl(again.valid) == dataset.dumps_jsonl(built.valid)
    other = dataset.build(dataset.BuildConfig(seed=6), registry=registry)
    assert dataset.dumps_jsonl(other.train) != dataset.dumps_jsonl(built.train)


def test_built_dataset_passes_its_validator(built: dataset.Dataset, registry: ToolRegistry) -> None:
    assert dataset.validate(built.train, built.valid, registry) == []


def test_built_dataset_is_balanced(built: dataset.Dataset, system: str) -> None:
    examples = built.examples
    n = len(examples)
    assert n >= 1200
    tools = Counter(e["tool"] for e in examples)
    # a little over half answer directly since the real-use requests (requests.yaml)
    assert 0.4 <= tools[None] / n <= 0.65
    for name in dataset.TOOLS:
        assert tools[name] >= 0.09 * n, name
    # Spanish leads: its image requests carry the vocabulary the model must translate
    langs = Counter(e["lang"] for e in examples)
    assert set(langs) == {"es", "en"} and min(langs.values()) >= 0.4 * n
    kinds = Counter(e["kind"] for e in examples)
    for kind in ("neg_image", "neg_search", "neg_code"):
        assert kinds[kind] >= 30, kind
    multi = [e for e in examples if e["multi_turn"]]
    assert len(multi) >= 60
    assert {e["tool"] for e in multi} == set(dataset.TOOLS)
    assert all(e["messages"][0] == {"role": "system", "content": system} for e in examples)
    valid_tools = Counter(e["tool"] for e in built.valid)
    assert set(valid_tools) == {None, *dataset.TOOLS}
    assert 0.05 * n <= len(built.valid) <= 0.2 * n


def test_tool_results_use_format_tool_result(built: dataset.Dataset) -> None:
    results = [m for e in built.examples for m in e["messages"] if m["role"] == "tool"]
    assert results
    for message in results:
        payload = json.loads(message["content"])
        assert payload["tool"] == message["tool_name"]
        again = format_tool_result(
            payload["tool"], payload["ok"], payload.get("result"), payload.get("error")
        )
        assert message["content"] == again


def test_spanish_image_requests_get_english_prompts(built: dataset.Dataset) -> None:
    spanish = [e for e in built.examples if e["tool"] == "generate_image" and e["lang"] == "es"]
    assert len(spanish) >= 80
    for e in spanish:
        call = next(m["content"] for m in e["messages"][1:] if "<TOOL:" in m["content"])
        body = call.split(">", 1)[1].removesuffix("</TOOL>")
        prompt = json.loads(body)["prompt"]
        assert prompt.isascii() and ", " in prompt, prompt


def test_code_seeds_print_what_they_claim(tmp_path: Path) -> None:
    """Each task's stdout (and, for failing ones, the error) is what Python gives."""
    tasks = dataset.load_seeds()["code"]["tasks"]
    assert len(tasks) >= 30
    for task in tasks:
        script = tmp_path / "main.py"
        script.write_text(task["code"], "utf-8")
        run = subprocess.run(
            [sys.executable, "-I", str(script)], capture_output=True, text=True, timeout=30
        )
        assert run.stdout == task["stdout"], task["id"]
        if task.get("error"):
            assert run.returncode != 0
            assert run.stderr.splitlines()[-1] == task["stderr"].splitlines()[-1], task["id"]
            assert {"es", "en"} <= set(task), task["id"]
        else:
            assert run.returncode == 0, (task["id"], run.stderr)


# -- the validator ---------------------------------------------------------------------
def good_call(system: str) -> dict[str, Any]:
    call = format_tool_call("web_search", {"query": "llama.cpp"})
    return example(system, user("Search llama.cpp"), assistant(call), tool="web_search")


def problems_of(system: str, registry: ToolRegistry, *examples: dict) -> list[str]:
    return [p.message for p in dataset.validate(list(examples), [], registry)]


def test_validator_accepts_good_examples(system: str, registry: ToolRegistry) -> None:
    result = format_tool_result("web_search", True, {"results": []})
    multi = example(
        system,
        user("Search llama.cpp news"),
        assistant("Let me look. " + format_tool_call("web_search", {"query": "llama.cpp"})),
        {"role": "tool", "content": result, "tool_name": "web_search"},
        assistant("I found nothing."),
        template="t/two",
        tool="web_search",
    )
    plain = example(system, user("Hi"), assistant("Hello!"), template="t/three")
    assert problems_of(system, registry, good_call(system), multi, plain) == []


def test_validator_takes_an_earlier_exchange_before_the_request(
    system: str, registry: ToolRegistry
) -> None:
    call = format_tool_call("web_search", {"query": "llama.cpp"})
    later = example(
        system,
        user("Hi"),
        assistant("Hello!"),
        user("Search llama.cpp"),
        assistant(call),
        tool="web_search",
    )
    assert problems_of(system, registry, later) == []
    assert dataset.user_text(later) == "Search llama.cpp"
    called_before = example(
        system,
        user("Search x"),
        assistant(call),
        user("Search llama.cpp"),
        assistant(call),
        template="t/called",
        tool="web_search",
    )
    two_users = example(
        system,
        user("Hi"),
        user("Search llama.cpp"),
        assistant(call),
        template="t/users",
        tool="web_search",
    )
    for broken in (called_before, two_users):
        found = problems_of(system, registry, broken)
        assert any("pairs without tool calls" in p for p in found), found


def test_scenes_translate_word_by_word() -> None:
    parts = {
        "things": [{"es": "una casa", "en": "house", "g": "f"}],
        "colors": [{"m": "rojo", "f": "roja", "en": "orange"}],
        "actions": [{"es": "durmiendo", "en": "sleeping"}],
        "places": [{"es": "en la nieve", "en": "in the snow"}],
    }
    seen = set()
    rng = random.Random(0)
    for _ in range(60):
        subject = dataset.scene_subject(parts, rng)
        seen.add((subject["es"], subject["en"]))
        assert subject["prompt"] == subject["en"]
    # gender agreement, "an" before a vowel, and no action for a thing that is not alive
    assert seen == {
        ("una casa", "a house"),
        ("una casa roja", "an orange house"),
        ("una casa en la nieve", "a house in the snow"),
        ("una casa roja en la nieve", "an orange house in the snow"),
    }


def test_scene_articles_follow_the_sound() -> None:
    parts = {
        "colors": [{"m": "azul", "f": "azul", "en": "orange"}],
        "actions": [],
        "places": [{"es": "en la nieve", "en": "in the snow"}],
    }
    for noun, bare, colored in [
        ("owl", "an owl", "an orange owl"),
        ("unicorn", "a unicorn", "an orange unicorn"),
        ("cat", "a cat", "an orange cat"),
    ]:
        parts["things"] = [{"es": "un x", "en": noun, "g": "m"}]
        rng = random.Random(0)
        seen = {dataset.scene_subject(parts, rng)["en"].split(" in ")[0] for _ in range(40)}
        assert seen == {bare, colored}


def test_built_dataset_has_scenes_and_later_turns(built: dataset.Dataset) -> None:
    examples = built.examples
    later = [e for e in examples if sum(m["role"] == "user" for m in e["messages"]) == 2]
    assert 0.04 * len(examples) <= len(later) <= 0.2 * len(examples)
    assert {e["tool"] for e in later} == {None, *dataset.TOOLS}
    prompts = [
        json.loads(m["content"].split(">", 1)[1].removesuffix("</TOOL>"))["prompt"]
        for e in examples
        if e["tool"] == "generate_image" and e["lang"] == "es"
        for m in e["messages"][1:]
        if "<TOOL:" in m["content"]
    ]
    things = dataset.load_seeds()["image"]["scene"]["things"]
    words = {f" {t['en']} " for t in things}
    assert len({w for w in words for p in prompts if w in f" {p} "}) >= 40


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('<TOOL:web_search>{"query": "x"</TOOL>', "needed repair"),
        ("<TOOL:web_search>[1, 2]</TOOL>", "bad tool call JSON"),
        ('<TOOL:web_search>{"query": "x", "max_results": 50}</TOOL>', "invalid arguments"),
        ('<TOOL:web_search>{"q": "x"}</TOOL>', "invalid arguments"),
        ('<TOOL:draw_picture>{"prompt": "x"}</TOOL>', "unknown tool"),
        ('<TOOL:web_search>{"query": "x"}</TOOL> and more', "exactly as format_tool_call"),
        ('<TOOL:web_search>{"query": "x"}</TOOL>', "exactly as format_tool_call"),
        ('<TOOL:generate_image>{"prompt":"un gato en la luna"}</TOOL>', "not English"),
    ],
)
def test_validator_rejects_broken_calls(
    system: str, registry: ToolRegistry, reply: str, expected: str
) -> None:
    name = reply.split(">", 1)[0].removeprefix("<TOOL:")
    broken = example(system, user("Search x"), assistant(reply), tool=name)
    found = problems_of(system, registry, broken)
    assert any(expected in p for p in found), found


def test_validator_rejects_a_wrong_system_prompt(system: str, registry: ToolRegistry) -> None:
    full = system_prompt(list(registry), style="full")
    found = problems_of(system, registry, good_call(full))
    assert any("system_prompt" in p for p in found), found


def test_validator_rejects_duplicates(system: str, registry: ToolRegistry) -> None:
    first = good_call(system)
    second = copy.deepcopy(first) | {"template": "t/other"}
    second["messages"][1]["content"] = "  SEARCH   llama.cpp "
    found = problems_of(system, registry, first, second)
    assert any("duplicate user message" in p for p in found), found


def test_validator_rejects_a_template_in_both_parts(system: str, registry: ToolRegistry) -> None:
    train = good_call(system)
    valid = example(system, user("Hello"), assistant("Hi!"), template=train["template"])
    problems = dataset.validate([train], [valid], registry)
    assert [p.where for p in problems] == ["split"]
    assert "in both train and valid" in problems[0].message


def test_validator_checks_labels_and_turns(system: str, registry: ToolRegistry) -> None:
    mislabeled = good_call(system) | {"tool": None}
    bad_result = example(
        system,
        user("Search x"),
        assistant(format_tool_call("web_search", {"query": "x"})),
        {"role": "tool", "content": '{"ok": true}', "tool_name": "web_search"},
        assistant("Done."),
        template="t/r",
        tool="web_search",
    )
    no_result = example(
        system,
        user("Search y"),
        assistant(format_tool_call("web_search", {"query": "y"})),
        assistant("Done."),
        template="t/n",
        tool="web_search",
    )
    found = problems_of(system, registry, mislabeled, bad_result, no_result)
    assert any("tool field" in p for p in found)
    assert any("format_tool_result" in p for p in found)
    assert any("expected assistant, tool" in p for p in found)


def test_read_jsonl_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"a": 1}\n{not json\n', "utf-8")
    with pytest.raises(dataset.DatasetError, match=r"train.jsonl:2"):
        dataset.read_jsonl(path)


# -- stats -------------------------------------------------------------------------------
def test_stats_counts(system: str) -> None:
    call = good_call(system) | {"lang": "es", "kind": "search"}
    plain = example(system, user("¿Qué es un píxel?"), assistant("Un punto."), kind="neg_image")
    counter = dataset.TokenCounter(use_model=False)
    result = dataset.stats([call], [plain], counter).as_dict()
    assert result["total"] == 2 and result["by_part"] == {"train": 1, "valid": 1}
    assert result["by_tool"] == {"none": 1, "web_search": 1}
    assert result["by_lang"] == {"en": 1, "es": 1}
    assert result["hard_negatives"] == 1 and result["multi_turn"] == 0
    assert result["token_method"].startswith("estimate")
    assert result["tokens"]["max"] > result["tokens_without_system"]["max"] > 0
    assert result["over_256"] == sum(
        counter(render_chatml(e["messages"], add_generation_prompt=False)) > 256
        for e in (call, plain)
    )


# -- the command line ----------------------------------------------------------------------
def test_cli_build_validate_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    assert main(["dataset", "build", "--out", str(out)]) == 0
    for name in ("train", "valid"):
        committed = (dataset.out_dir() / f"{name}.jsonl").read_bytes()
        assert (out / f"{name}.jsonl").read_bytes() == committed
    assert main(["dataset", "build", "--check", "--out", str(out)]) == 0
    assert main(["dataset", "validate", str(out)]) == 0
    capsys.readouterr()
    assert main(["dataset", "stats", str(out), "--json", "--estimate"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["total"] == sum(1 for _ in (out / "train.jsonl").open()) + sum(
        1 for _ in (out / "valid.jsonl").open()
    )
    with (out / "valid.jsonl").open("a", encoding="utf-8") as fh:
        fh.write((out / "train.jsonl").read_text("utf-8").splitlines()[0] + "\n")
    assert main(["dataset", "validate", str(out)]) == 1
    assert "duplicate user message" in capsys.readouterr().out
    assert main(["dataset", "build", "--check", "--out", str(out)]) == 1


def test_no_dev_eval_case_is_in_the_training_data(built: dataset.Dataset) -> None:
    """The eval sets measure what the model learnt, not what it was shown."""
    dev = dataset.read_jsonl(eval_dir() / "dev.jsonl")
    files = sorted((eval_dir()).glob("*.jsonl"))
    cases = [case for path in files for case in dataset.read_jsonl(path)]
    asked = {dataset._norm(dataset.user_text(c)) for c in cases}  # each request
    taught = {
        dataset._norm(m["content"])
        for e in built.examples
        for m in e["messages"]
        if m["role"] == "user"
    }
    assert len(dev) >= 100 and len(cases) > len(dev)
    assert asked.isdisjoint(taught), asked & taught


def test_builder_drops_what_an_eval_set_asks(
    built: dataset.Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request the templates happen to make that an eval set also asks is left out,
    whatever its case and spacing, and the build counts it."""
    single = [e for e in built.train if sum(m["role"] == "user" for m in e["messages"]) == 1]
    taught = [dataset.user_text(e) for e in single[:3]]
    cases = [{"messages": [{"role": "user", "content": f"  {t.upper()} "}]} for t in taught]
    (tmp_path / "held.jsonl").write_text(dataset.dumps_jsonl(cases), "utf-8")
    monkeypatch.setattr(dataset, "eval_dir", lambda: tmp_path)
    again = dataset.build()
    asked = {m["content"] for e in again.examples for m in e["messages"] if m["role"] == "user"}
    assert again.dropped_eval >= 3
    assert asked.isdisjoint(taught)
    assert len(again.examples) < len(built.examples) + built.dropped_eval


def test_deck_deals_every_item_as_often_as_the_others() -> None:
    items = list("abcde")
    dealt = dataset.deck(items, 12, random.Random(3))
    assert len(dealt) == 12
    assert set(Counter(dealt).values()) == {2, 3}
    assert dataset.deck(items, 0, random.Random(3)) == []


def test_scene_pairs_translate_both_things() -> None:
    parts = {
        "things": [],
        "colors": [],
        "actions": [],
        "places": [{"es": "en la nieve", "en": "in the snow"}],
    }
    cat = {"es": "un gato", "en": "cat", "g": "m", "alive": True}
    owl = {"es": "un búho", "en": "owl", "g": "m", "alive": True}
    rng = random.Random(1)
    seen = {tuple(dataset.scene_subject(parts, rng, cat, owl).values()) for _ in range(30)}
    assert seen == {
        ("un gato y un búho", "a cat and an owl", "a cat and an owl"),
        ("un gato y un búho en la nieve", *["a cat and an owl in the snow"] * 2),
    }


def _calls(examples: list[dict[str, Any]], tool: str) -> list[tuple[str, dict[str, Any]]]:
    """(the request, the call's arguments) of each example that calls ``tool``, read by
    the runtime's own parser."""
    out = []
    for e in examples:
        user_text = [m["content"] for m in e["messages"] if m["role"] == "user"][-1]
        for m in e["messages"]:
            if m["role"] != "assistant":
                continue
            parser = ToolCallParser()
            for event in [*parser.feed(m["content"]), *parser.close()]:
                if isinstance(event, ToolCall) and event.name == tool:
                    out.append((user_text, event.arguments))
    return out


def test_scene_nouns_are_asked_for_in_spanish_and_translated(built: dataset.Dataset) -> None:
    """The nouns of the scene vocabulary reach the model in Spanish image requests of the
    training part (with their English in the prompt) and in translation answers. A few
    fall only in validation templates (at most 5%)."""
    things = dataset.load_seeds()["image"]["scene"]["things"]
    # hand-written result exchanges (result/...) may name a place its own way ("un
    # restaurante de carretera" -> "a diner"); the vocabulary is the templates' business
    spanish = [
        e for e in built.train if e["lang"] == "es" and not e["template"].startswith("result/")
    ]
    requests = _calls(spanish, "generate_image")
    words = " ".join(
        e["messages"][-1]["content"] for e in built.examples if e["kind"] == "word"
    ).lower()
    asked = []
    for thing in things:
        # "un pavo" (turkey) is not the "un pavo" of "un pavo real" (peacock)
        longer = [
            t["es"][len(thing["es"]) :] for t in things if t["es"].startswith(f"{thing['es']} ")
        ]
        not_longer = "".join(f"(?!{re.escape(rest)}\\b)" for rest in longer)
        said = re.compile(rf"\b{re.escape(thing['es'])}\b{not_longer}")
        hits = [args["prompt"] for text, args in requests if said.search(text)]
        assert all(thing["en"] in prompt for prompt in hits), (thing, hits)
        asked += [thing] if hits else []
    assert len(asked) >= 0.95 * len(things)
    # and nearly all of them in a translation answer (single words and lists are dealt
    # from separate decks)
    taught = [t for t in things if t["en"].lower() in words or t["es"].split(" ", 1)[1] in words]
    assert len(taught) >= 0.9 * len(things)


def test_numbers_asked_for_are_the_numbers_in_the_call(built: dataset.Dataset) -> None:
    sized = [
        (text, args)
        for text, args in _calls(built.examples, "generate_image")
        if re.search(r"\d+x\d+", text)
    ]
    assert len(sized) >= 20
    for text, args in sized:
        width, height = re.search(r"(\d+)x(\d+)", text).groups()  # type: ignore[union-attr]
        assert (args["width"], args["height"]) == (int(width), int(height)), text
    counted = [(t, a) for t, a in _calls(built.examples, "web_search") if "max_results" in a]
    assert len({a["max_results"] for _, a in counted}) >= 6
    for text, args in counted:
        if args["max_results"] == 1:  # said in the singular, in words or digits
            assert re.search(r"\b(1|one|un|primer|top) (solo )?result(ado)?\b", text, re.I), text
        else:
            assert re.search(rf"\b{args['max_results']} (primeros )?result(s|ados)\b", text) or (
                re.search(rf"\btop {args['max_results']} only\b", text)
            ), text
    assert any(a["max_results"] == 1 for _, a in counted)
    assert not re.search(r"\b1 (results|resultados)\b", dataset.dumps_jsonl(built.examples))


def test_word_lists_translate_every_word(built: dataset.Dataset) -> None:
    """Each word of a "Traduce al inglés: ..." list comes back as its English, in order."""
    seeds = dataset.load_seeds()
    english = {w["es"]: w["en"] for w in seeds["families"]["words"]}
    english |= {w["es"]: w["en"] for w in dataset.scene_words(seeds["image"]["scene"]["things"])}
    lists = [e for e in built.examples if e["template"] == "word/words_es_traduce"]
    assert lists
    for e in lists:
        asked = e["messages"][-2]["content"].removeprefix("Traduce al inglés: ")
        spanish = re.split(r", | y ", asked)
        answer = re.split(r", | and ", e["messages"][-1]["content"])
        assert len(spanish) == dataset.WORDS_PER_LIST, asked
        assert answer == [english[word] for word in spanish], (asked, answer)


def test_untaught_nouns_stay_out_of_the_training_data(built: dataset.Dataset) -> None:
    """`nouns-untaught.jsonl` measures translation of nouns the data never shows."""
    cases = dataset.read_jsonl(eval_dir() / "nouns-untaught.jsonl")
    shown = " ".join(m["content"] for e in built.examples for m in e["messages"]).lower()
    for case in cases:
        for word in case["expected_args_contain"]["prompt"]:
            assert not re.search(rf"\b{word}(e?s)?\b", shown), word
