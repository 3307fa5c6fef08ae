"""The tool-calling dataset: build it from hand-written seeds, validate it, describe it.

Seeds live in ``datasets/seeds/*.yaml``. :func:`build` expands their templates with a
fixed seed; :func:`write` puts the result in ``datasets/tool_calling/{train,valid}.jsonl``,
one example a line::

    {"id": "image/img_es_dibuja-03", "template": "image/img_es_dibuja", "lang": "es",
     "kind": "image", "tool": "generate_image", "multi_turn": false,
     "messages": [{"role": "system", ...}, {"role": "user", ...}, {"role": "assistant", ...}]}

``tool`` is the first tool called (``null`` when none), ``kind`` says what the example
teaches (``image``, ``code``, ``search``, ``chat``, ``fact``, ``neg_image``...; ``neg_*``
are hard negatives). Every example starts with ``system_prompt(tools, style="short")``
and one request (the last user message); some have a short earlier exchange before it,
as a chat's later turns do. Whole templates go to one side of the split, so the
validation set holds phrasings the model never trained on.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from thau import jsonl
from thau.chat.parser import ToolCall, ToolCallError, ToolCallParser
from thau.errors import ThauError, ToolError
from thau.prompt_format import (
    Message,
    format_tool_call,
    format_tool_result,
    render_chatml,
    system_prompt,
)
from thau.resources import datasets_dir, eval_dir
from thau.tools.registry import ToolRegistry

DEFAULT_SEED = 5
TOOLS = ("generate_image", "code_execution", "web_search")
LANGS = ("es", "en")
VISION_URL = "http://localhost:8000"
WORDS_PER_LIST = 6
RESULT_COUNTS = (1, 2, 3, 4, 6, 7, 8, 10)  # asked-for numbers of search results
IMAGE_SIZES = (  # asked-for image sizes (width, height)
    (512, 512),
    (768, 768),
    (1024, 1024),
    (512, 768),
    (768, 512),
    (1024, 768),
    (640, 640),
)


class DatasetError(ThauError):
    """The seeds or the dataset files cannot be used."""


@dataclass(frozen=True)
class BuildConfig:
    """How many examples each template makes, and how often each variation appears."""

    seed: int = DEFAULT_SEED
    valid_share: float = 0.1
    valid_per_template: int = 10  # validation keeps at most this many of a template
    per_image_template: int = 2
    per_scene_template: dict[str, int] = field(default_factory=lambda: {"es": 24, "en": 3})
    per_code_template: int = 9
    per_search_template: int = 9
    per_current_template: int = 5
    per_capital_template: int = 12
    per_word_template: int = 25
    per_word_list_template: int = 48
    per_math_template: int = 8
    per_conversion_template: int = 6
    per_work_template: int = 9
    per_explain_template: int = 7
    per_howto_template: int = 11
    per_advice_template: int = 9
    scene_pair_share: float = 0.6
    style_share: float = 0.35
    option_share: float = 0.3
    count_share: float = 0.2
    preface_share: float = 0.2
    image_result_share: float = 0.03
    history_share: float = 0.05
    code_result_share: float = 0.12


@dataclass
class Draft:
    """An example before the system prompt, the id and the split are added."""

    family: str  # templates of one family are split together (stratified)
    template: str  # the split unit
    lang: str
    kind: str
    messages: list[Message]


@dataclass
class Dataset:
    train: list[dict[str, Any]]
    valid: list[dict[str, Any]]
    dropped_duplicates: int = 0
    dropped_eval: int = 0  # drafts that asked what an eval set asks

    @property
    def examples(self) -> list[dict[str, Any]]:
        return self.train + self.valid


# -- seeds -------------------------------------------------------------------------
def seeds_dir() -> Path:
    """The shipped seeds."""
    return datasets_dir() / "seeds"


def out_dir() -> Path:
    """The shipped built dataset (``train.jsonl``, ``valid.jsonl``)."""
    return datasets_dir() / "tool_calling"


def load_seeds(folder: Path | None = None) -> dict[str, Any]:
    """Every ``*.yaml`` seed file, by file stem."""
    import yaml

    folder = Path(folder) if folder else seeds_dir()
    files = sorted(folder.glob("*.yaml"))
    if not files:
        raise DatasetError(f"No seed files (*.yaml) in {folder}.")
    return {path.stem: yaml.safe_load(path.read_text("utf-8")) for path in files}


def builtin_registry() -> ToolRegistry:
    """The registry of the built-in tools, refusing to go on without any of them."""
    registry = ToolRegistry.from_entry_points()
    missing = [name for name in TOOLS if name not in registry]
    if missing:
        why = "; ".join(registry.load_errors) or "not registered"
        raise DatasetError(f"Built-in tools missing: {', '.join(missing)} ({why}).")
    return registry


# -- message helpers -----------------------------------------------------------------
def training_system_prompt() -> str:
    """The short tool prompt every training example starts with (built-in tools)."""
    return system_prompt(list(builtin_registry()), style="short")


def _user(text: str) -> Message:
    return {"role": "user", "content": text}


def _assistant(text: str) -> Message:
    return {"role": "assistant", "content": text}


def _call(name: str, args: dict[str, Any], preface: str | None = None) -> Message:
    text = format_tool_call(name, args)
    return _assistant(f"{preface} {text}" if preface else text)


def _result(name: str, result: Any = None, error: str | None = None) -> Message:
    content = format_tool_result(name, error is None, result, error)
    return {"role": "tool", "content": content, "tool_name": name}


def _preface(seeds: dict[str, Any], lang: str, rng: random.Random, cfg: BuildConfig) -> str | None:
    return rng.choice(seeds["prefaces"][lang]) if rng.random() < cfg.preface_share else None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def image_result(prompt: str, args: dict[str, Any], seed: int) -> dict[str, Any]:
    """What ``generate_image`` returns, as the model sees it."""
    name = f"{_digest(prompt)}.png"
    return {
        "image_url": f"{VISION_URL}/vision/image/{name}",
        "path": f"/home/user/.local/share/thau/images/{name}",
        "seed": seed,
        "width": args.get("width", 512),
        "height": args.get("height", 512),
        "metadata": {},
    }


def code_result(
    stdout: str, stderr: str = "", exit_code: int | None = 0, timed_out: bool = False
) -> dict[str, Any]:
    """What ``code_execution`` returns (the sandbox's ``SandboxResult.as_dict()``); a run
    that timed out was killed (``SIGKILL``, no exit code)."""
    return {
        "stdout": stdout,
        "stderr": stderr,
        "exit_code": None if timed_out else exit_code,
        "timed_out": timed_out,
        "signal": "SIGKILL" if timed_out else None,
        "stdout_truncated": False,
        "stderr_truncated": False,
        "stdout_bytes": len(stdout.encode("utf-8")),
        "stderr_bytes": len(stderr.encode("utf-8")),
        "sandbox": "bwrap",
        "warning": None,
        "duration_s": 0.2,
    }


def search_result(query: str, results: list[dict[str, str]]) -> dict[str, Any]:
    """What ``web_search`` returns."""
    return {"query": query, "backend": "ddgs", "cached": False, "results": results}


# -- families ------------------------------------------------------------------------
def with_article(words: str) -> str:
    """``a``/``an`` by sound for the scene vocabulary ("an owl", "a unicorn")."""
    vowel = words[0] in "aeiou" and not words.startswith(("uni", "use", "eu", "one"))
    return f"an {words}" if vowel else f"a {words}"


def deck(items: list[Any], n: int, rng: random.Random) -> list[Any]:
    """``n`` items dealt from shuffled copies of ``items``: each one comes up as often as
    any other (give or take one), unlike ``n`` independent choices."""
    out: list[Any] = []
    while len(out) < n:
        out += rng.sample(items, len(items))
    return out[:n]


def scene_subject(
    parts: dict[str, Any],
    rng: random.Random,
    thing: dict[str, Any] | None = None,
    other: dict[str, Any] | None = None,
) -> dict[str, str]:
    """A subject built from scene parts (around ``thing``, or a random one, and ``other``
    beside it if given): its Spanish and English words and its prompt.

    The English is the literal translation, so the prompt starts with exactly what was
    asked for: "un zorro azul pescando en la nieve" -> "a blue fox fishing in the snow",
    "un gato y una jirafa en la playa" -> "a cat and a giraffe on the beach".
    """
    thing = thing or rng.choice(parts["things"])
    if other:  # two things side by side, neither coloured nor acting
        es = [thing["es"], "y", other["es"]]
        english = [f"{with_article(thing['en'])} and {with_article(other['en'])}"]
    else:
        es, en = [thing["es"]], [thing["en"]]
        if rng.random() < 0.35:
            color = rng.choice(parts["colors"])
            es.append(color[thing["g"]])
            en.insert(0, color["en"])
        english = [with_article(" ".join(en))]
        if thing.get("alive") and rng.random() < 0.5:
            action = rng.choice(parts["actions"])
            es.append(action["es"])
            english.append(action["en"])
    if rng.random() < 0.75:
        place = rng.choice(parts["places"])
        es.append(place["es"])
        english.append(place["en"])
    words = " ".join(english)
    return {"es": " ".join(es), "en": words, "prompt": words}


def _image_drafts(seeds: dict[str, Any], rng: random.Random, cfg: BuildConfig) -> list[Draft]:
    """Requests for the hand-written subjects, then for scenes built from parts."""
    jobs = []
    for tpl in seeds["templates"]:
        jobs += [(tpl, s) for s in rng.sample(seeds["subjects"], cfg.per_image_template)]
    scene_jobs = [t for t in seeds["templates"] for _ in range(cfg.per_scene_template[t["lang"]])]
    pairs = [rng.random() < cfg.scene_pair_share for _ in scene_jobs]
    things = iter(deck(seeds["scene"]["things"], len(scene_jobs) + sum(pairs), rng))
    for tpl, pair in zip(scene_jobs, pairs, strict=True):
        thing, other = next(things), next(things) if pair else None
        jobs.append((tpl, scene_subject(seeds["scene"], rng, thing, other)))
    out = []
    for tpl, subject in jobs:
        lang = tpl["lang"]
        words = subject[lang]
        style = rng.choice(seeds["default_styles"])
        args: dict[str, Any] = {}
        if rng.random() < cfg.style_share:
            chosen = rng.choice(seeds["styles"])
            words, style = f"{words} {chosen[lang]}", chosen["prompt"]
        if rng.random() < cfg.option_share and not tpl.get("sized"):
            option = rng.choice(seeds["options"])
            if option.get("size"):
                w, h = rng.choice(IMAGE_SIZES)
                words = f"{words}, {option[lang].format(w=w, h=h)}"
                args.update(width=w, height=h)
            else:
                words = f"{words}, {option[lang]}"
                args.update(option["args"])
        size = ""
        if tpl.get("sized"):  # the size comes before the subject
            w, h = rng.choice(IMAGE_SIZES)
            size = f"{w}x{h}"
            args.update(width=w, height=h)
        prompt = f"{subject['prompt']}, {style}, {rng.choice(seeds['finishes'])}"
        args = {"prompt": prompt, **args}
        messages = [_user(tpl["text"].format(s=words, size=size))]
        messages.append(_call("generate_image", args, _preface(seeds, lang, rng, cfg)))
        if rng.random() < cfg.image_result_share:
            if rng.random() < 0.2:
                failure = rng.choice(seeds["answers_error"])
                messages += [
                    _result("generate_image", error=failure["error"]),
                    _assistant(failure[lang]),
                ]
            else:
                seed = args.get("seed", rng.randrange(1, 2**31))
                result = image_result(prompt, args, seed)
                answer = rng.choice(seeds["answers_ok"][lang])
                answer = answer.format(s=subject[lang], url=result["image_url"])
                messages += [_result("generate_image", result), _assistant(answer)]
        out.append(Draft("image", f"image/{tpl['id']}", lang, "image", messages))
    return out


def _code_reply(
    task: dict[str, Any], lang: str, rng: random.Random, generic: list[str] | None
) -> list[Message]:
    """The tool result and the answer from it (``generic``: answers for pasted code)."""
    if task.get("error"):
        result = code_result("", task["stderr"], 1)
        return [_result("code_execution", result), _assistant(task[lang]["answer"])]
    out = task["stdout"].strip()
    answer = rng.choice(generic) if generic else task[lang]["answer"]
    return [
        _result("code_execution", code_result(task["stdout"])),
        _assistant(answer.format(out=out)),
    ]


def _code_drafts(seeds: dict[str, Any], rng: random.Random, cfg: BuildConfig) -> list[Draft]:
    """Tasks described in words, then pasted snippets. Failing tasks exist in both languages."""
    out = []
    tasks = seeds["tasks"]
    jobs = [(t, "code-ask", [x for x in tasks if t["lang"] in x]) for t in seeds["ask_templates"]]
    jobs += [(t, "code-paste", tasks) for t in seeds["code_templates"]]
    for tpl, family, pool in jobs:
        lang = tpl["lang"]
        generic = seeds["output_answers"][lang] if family == "code-paste" else None
        for task in rng.sample(pool, cfg.per_code_template):
            text = tpl["text"].format(ask=task.get(lang, {}).get("ask"), code=task["code"])
            call = _call("code_execution", {"code": task["code"]}, _preface(seeds, lang, rng, cfg))
            messages = [_user(text), call]
            if rng.random() < cfg.code_result_share:
                messages += _code_reply(task, lang, rng, generic)
            out.append(Draft(family, f"code/{tpl['id']}", lang, "code", messages))
    return out


def _with_sentence(text: str, sentence: str) -> str:
    return f"{text} {sentence}" if text[-1] in ".?!" else f"{text}. {sentence}"


def _search_drafts(seeds: dict[str, Any], rng: random.Random, cfg: BuildConfig) -> list[Draft]:
    out = []
    for tpl in seeds["templates"]:
        lang = tpl["lang"]
        for topic in rng.sample(seeds["topics"], cfg.per_search_template):
            text = tpl["text"].format(ask=topic[lang]["ask"])
            args: dict[str, Any] = {"query": topic[lang]["query"]}
            if rng.random() < cfg.count_share:
                count, n = rng.choice(seeds["counts"]), rng.choice(RESULT_COUNTS)
                words = count["one"][lang] if n == 1 else count[lang].format(n=n)
                if count.get("short") and text[-1] not in "?!":
                    text = f"{text.rstrip('.')}, {words}"
                else:
                    text = _with_sentence(text, words[0].upper() + words[1:])
                args["max_results"] = n
            call = _call("web_search", args, _preface(seeds, lang, rng, cfg))
            out.append(Draft("search", f"search/{tpl['id']}", lang, "search", [_user(text), call]))
    for tpl in seeds["current_templates"]:
        lang = tpl["lang"]
        for city in rng.sample(seeds["cities"], cfg.per_current_template):
            args = {"query": tpl["query"].format(city=city)}
            call = _call("web_search", args, _preface(seeds, lang, rng, cfg))
            messages = [_user(tpl["text"].format(city=city)), call]
            out.append(Draft("search-now", f"search/{tpl['id']}", lang, "search", messages))
    for item in seeds["exchanges"]:
        for lang in LANGS:
            messages = search_exchange(item, lang)
            template = f"search/{item['id']}"
            out.append(Draft("search-exchange", template, lang, "search", messages))
    return out


def search_exchange(item: dict[str, Any], lang: str) -> list[Message]:
    """A search seed's whole exchange: request, call, results (or the error), answer."""
    side = item[lang]
    if "error" in item:
        result = _result("web_search", error=item["error"])
    else:
        result = _result("web_search", search_result(side["query"], item["results"]))
    call = _call("web_search", {"query": side["query"]})
    return [_user(side["user"]), call, result, _assistant(side["answer"])]


def _result_drafts(seeds: dict[str, Any], rng: random.Random) -> list[Draft]:
    """Whole exchanges where a tool ran and the answer states its result (or its error)."""
    out = []
    for item in seeds["code"]:
        result = code_result(
            item["stdout"],
            item.get("stderr", ""),
            item.get("exit_code", 0),
            bool(item.get("timed_out")),
        )
        for lang in LANGS:
            messages = [
                _user(item[lang]["user"]),
                _call("code_execution", {"code": item["code"]}),
                _result("code_execution", result),
                _assistant(item[lang]["answer"]),
            ]
            out.append(Draft("result-code", f"result/{item['id']}", lang, "code", messages))
    for item in seeds["search"]:
        for lang in LANGS:
            messages = search_exchange(item, lang)
            out.append(Draft("result-search", f"result/{item['id']}", lang, "search", messages))
    for item in seeds["image"]:
        args = {"prompt": item["prompt"]}
        if "error" in item:
            result = _result("generate_image", error=item["error"])
        else:
            result = _result(
                "generate_image", image_result(item["prompt"], args, rng.randrange(10**6))
            )
        for lang in LANGS:
            messages = [
                _user(item[lang]["user"]),
                _call("generate_image", args),
                result,
                _assistant(item[lang]["answer"]),
            ]
            out.append(Draft("result-image", f"result/{item['id']}", lang, "image", messages))
    return out


def _answer_drafts(seeds: dict[str, Any]) -> list[Draft]:
    out = []
    for item in seeds["items"]:
        for lang in LANGS:
            for question in item[lang]["q"]:
                messages = [_user(question), _assistant(item[lang]["a"])]
                family = f"answer-{item['kind']}"
                out.append(Draft(family, f"answer/{item['id']}", lang, item["kind"], messages))
    return out


def _arithmetic(op: str, rng: random.Random) -> tuple[int, int, int]:
    if op == "mul":
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        return a, b, a * b
    if op == "add":
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        return a, b, a + b
    if op == "sub":
        a = rng.randint(20, 99)
        b = rng.randint(1, a - 1)
        return a, b, a - b
    b, r = rng.randint(2, 12), rng.randint(2, 12)
    return b * r, b, r


def scene_words(things: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The image scene nouns as word pairs, without the Spanish article."""
    return [{"es": t["es"].split(" ", 1)[1], "en": t["en"]} for t in things]


def _join(words: list[str], lang: str) -> str:
    """Join words as "a, b and c" / "a, b y c"."""
    return f"{', '.join(words[:-1])} {'y' if lang == 'es' else 'and'} {words[-1]}"


def _family_drafts(
    seeds: dict[str, Any],
    rng: random.Random,
    cfg: BuildConfig,
    code_tasks: list[dict[str, Any]],
    things: list[dict[str, Any]],
) -> list[Draft]:
    """Direct answers from tables: capitals, words, sums, units, authors, code to explain,
    code written but not run, advice."""
    out = []
    known = {row["es"] for row in seeds["words"]}
    words = seeds["words"] + [w for w in scene_words(things) if w["es"] not in known]

    def add(family: str, tpl: dict[str, Any], text: str, answer: str, kind: str = "") -> None:
        messages = [_user(text), _assistant(answer)]
        template = f"{family}/{tpl['id']}"
        out.append(Draft(family, template, tpl["lang"], kind or family, messages))

    for tpl in seeds["capital_templates"]:
        lang = tpl["lang"]
        for row in rng.sample(seeds["capitals"], cfg.per_capital_template):
            values = {"country": row[lang], "capital": row[f"cap_{lang}"]}
            add("capital", tpl, tpl["text"].format(**values), tpl["answer"].format(**values))
    rows = iter(deck(words, cfg.per_word_template * len(seeds["word_templates"]), rng))
    for tpl in seeds["word_templates"]:
        for row in islice(rows, cfg.per_word_template):
            add("word", tpl, tpl["text"].format(**row), tpl["answer"].format(**row))
    per_list = cfg.per_word_list_template * len(seeds["word_list_templates"])
    rows = iter(deck(words, per_list * WORDS_PER_LIST, rng))
    for tpl in seeds["word_list_templates"]:
        for _ in range(cfg.per_word_list_template):
            chunk = list(islice(rows, WORDS_PER_LIST))
            joined = {lang: _join([row[lang] for row in chunk], lang) for lang in LANGS}
            add("word", tpl, tpl["text"].format(**joined), tpl["answer"].format(**joined))
    for tpl in seeds["arithmetic_templates"]:
        pairs: set[tuple[int, int]] = set()
        while len(pairs) < cfg.per_math_template:
            a, b, r = _arithmetic(tpl["op"], rng)
            if (a, b) in pairs:
                continue
            pairs.add((a, b))
            add("math", tpl, tpl["text"].format(a=a, b=b), tpl["answer"].format(a=a, b=b, r=r))
    for tpl in seeds["conversion_templates"]:
        for n in rng.sample(range(2, 13), cfg.per_conversion_template):
            r = n * tpl["factor"]
            add("conversion", tpl, tpl["text"].format(n=n), tpl["answer"].format(n=n, r=r))
    for tpl in seeds["work_templates"]:
        lang = tpl["lang"]
        for row in rng.sample(seeds["works"], cfg.per_work_template):
            values = {
                "title": row["title"] if lang == "es" else row["title_en"],
                "author": row.get(f"author_{lang}", row["author"]),
                "verb": seeds["work_verbs"][row["kind"]][lang],
            }
            answer = tpl["answer"].format(**values)
            add("work", tpl, tpl["text"].format(**values), answer[:1].upper() + answer[1:])
    snippets = [
        (what, plang, table)
        for what in seeds["howto_constructs"]
        for plang, table in seeds["howto_languages"].items()
    ]
    for tpl in seeds["howto_templates"]:
        for what, plang, table in rng.sample(snippets, cfg.per_howto_template):
            text = tpl["text"].format(what=what[tpl["lang"]], plang=plang)
            answer = f"{tpl['intro']}\n```{table['fence']}\n{table[what['id']]}\n```"
            add("howto", tpl, text, answer, kind="neg_code")
    for tpl in seeds["advice_templates"]:
        lang = tpl["lang"]
        for row in rng.sample(seeds["advice"], cfg.per_advice_template):
            add("advice", tpl, tpl["text"].format(goal=row[lang]), row[f"a_{lang}"], "neg_search")
    for tpl in seeds["explain_templates"]:
        lang = tpl["lang"]
        tasks = [t for t in code_tasks if lang in t and not t.get("error")]
        if tpl.get("inline"):
            tasks = [t for t in tasks if "\n" not in t["code"].strip()]
        for task in rng.sample(tasks, cfg.per_explain_template):
            values = {"code": task["code"], "ask": task[lang]["ask"]}
            add("explain", tpl, tpl["text"].format(**values), tpl["answer"].format(**values))
    return out


def _add_history(drafts: Sequence[Draft], rng: random.Random, share: float) -> None:
    """Put a short earlier exchange before some requests, as in a chat's later turns.

    The exchange is another tool-free example of the same language with a short answer,
    so the model learns to act on the last message, whatever came before it.
    """
    pool: dict[str, list[list[Message]]] = {lang: [] for lang in LANGS}
    for draft in drafts:
        short = len(draft.messages) == 2 and len(draft.messages[1]["content"]) <= 90
        if short and draft.kind in ("chat", "capital", "word", "math", "conversion", "fact"):
            pool[draft.lang].append(list(draft.messages))
    for draft in drafts:
        if rng.random() < share:
            earlier = rng.choice(pool[draft.lang])
            if earlier[0]["content"] != draft.messages[0]["content"]:
                draft.messages[:0] = [dict(m) for m in earlier]


# -- build ---------------------------------------------------------------------------
def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


def user_text(example: dict[str, Any]) -> str:
    """The request: the example's last user message."""
    return [m["content"] for m in example["messages"] if m["role"] == "user"][-1]


def _example(draft: Draft, system: str, number: int) -> dict[str, Any]:
    tool = None
    for message in draft.messages:
        if message["role"] == "assistant":
            calls = [e for e in _parse(message["content"]) if isinstance(e, ToolCall)]
            if calls:
                tool = calls[0].name
                break
    return {
        "id": f"{draft.template}-{number:02d}",
        "template": draft.template,
        "lang": draft.lang,
        "kind": draft.kind,
        "tool": tool,
        "multi_turn": any(m["role"] == "tool" for m in draft.messages),
        "messages": [{"role": "system", "content": system}, *draft.messages],
    }


def _split(drafts: Sequence[Draft], share: float, seed: int) -> set[str]:
    """Templates that go to validation: a share of each family's templates."""
    rng = random.Random(f"{seed}-split")
    families: dict[str, list[str]] = {}
    for draft in drafts:
        names = families.setdefault(draft.family, [])
        if draft.template not in names:
            names.append(draft.template)
    valid: set[str] = set()
    for family in sorted(families):
        names = sorted(families[family])
        rng.shuffle(names)
        valid.update(names[: max(1, round(share * len(names)))] if len(names) > 2 else [])
    return valid


def build(
    config: BuildConfig | None = None,
    *,
    seeds_dir: Path | None = None,
    registry: ToolRegistry | None = None,
) -> Dataset:
    """Expand the seeds into a de-duplicated, split dataset (same config, same bytes)."""
    cfg = config or BuildConfig()
    seeds = load_seeds(seeds_dir)
    registry = registry or builtin_registry()
    system = system_prompt(list(registry), style="short")
    rng = random.Random(cfg.seed)
    drafts = [
        *_image_drafts(seeds["image"], rng, cfg),
        *_code_drafts(seeds["code"], rng, cfg),
        *_search_drafts(seeds["search"], rng, cfg),
        *_answer_drafts(seeds["answers"]),
        *_answer_drafts(seeds["requests"]),
        *_result_drafts(seeds["results"], random.Random(f"{cfg.seed}-results")),
        *_family_drafts(
            seeds["families"], rng, cfg, seeds["code"]["tasks"], seeds["image"]["scene"]["things"]
        ),
    ]
    held_out = eval_requests()
    seen: set[str] = set()
    kept: list[Draft] = []
    clashes = 0
    for draft in drafts:
        key = _norm(draft.messages[0]["content"])
        if key in held_out:  # the eval sets measure what was learnt, not what was shown
            clashes += 1
        elif key not in seen:
            seen.add(key)
            kept.append(draft)
    _add_history(kept, random.Random(f"{cfg.seed}-history"), cfg.history_share)
    valid_templates = _split(kept, cfg.valid_share, cfg.seed)
    numbers: Counter[str] = Counter()
    train, valid = [], []
    for draft in kept:
        numbers[draft.template] += 1
        example = _example(draft, system, numbers[draft.template])
        if draft.template not in valid_templates:
            train.append(example)
        elif numbers[draft.template] <= cfg.valid_per_template:
            valid.append(example)
    order = random.Random(f"{cfg.seed}-order")
    order.shuffle(train)
    order.shuffle(valid)
    duplicates = len(drafts) - len(kept) - clashes
    return Dataset(train, valid, dropped_duplicates=duplicates, dropped_eval=clashes)


def eval_requests(folder: Path | None = None) -> set[str]:
    """The last user message of every eval case (normalised), which the builder never
    teaches."""
    folder = folder or eval_dir()
    cases = [case for path in sorted(folder.glob("*.jsonl")) for case in read_jsonl(path)]
    return {_norm(user_text(case)) for case in cases}


def dumps_jsonl(examples: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples)


def write(dataset: Dataset, folder: Path | None = None) -> list[Path]:
    folder = folder or out_dir()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, examples in (("train", dataset.train), ("valid", dataset.valid)):
        path = folder / f"{name}.jsonl"
        path.write_text(dumps_jsonl(examples), "utf-8")
        paths.append(path)
    return paths


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Examples of a JSONL file; a line that is not a JSON object raises ``DatasetError``."""
    try:
        return jsonl.read_jsonl(path)
    except jsonl.JsonlError as exc:
        raise DatasetError(str(exc)) from None


# -- validate ------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    where: str  # "train.jsonl:12" or "split"
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


_SPANISH = re.compile(r"[áéíóúñ¿¡]|\b(el|la|los|las|una|unos|con|del|sobre|que|por)\b", re.I)


def _parse(text: str) -> list[Any]:
    parser = ToolCallParser()
    events = parser.feed(text) + parser.close()
    return [e for e in events if isinstance(e, ToolCall | ToolCallError)]


def _check_call(message: Message, registry: ToolRegistry) -> tuple[str | None, list[str]]:
    """The tool an assistant message calls (or None) and what is wrong with it."""
    events = _parse(message["content"])
    if not events:
        return None, []
    if len(events) > 1:
        return None, ["more than one tool call in one assistant message"]
    event = events[0]
    if isinstance(event, ToolCallError):
        return None, [f"bad tool call JSON: {event.error}"]
    if event.repaired:
        return event.name, [f"tool call JSON needed repair: {event.raw.strip()[:60]}"]
    try:
        registry.validate(event.name, event.arguments)
    except ToolError as exc:
        return event.name, [str(exc)]
    problems = []
    canonical = format_tool_call(event.name, event.arguments)
    content = message["content"]
    before = content[: -len(canonical)]
    if not content.endswith(canonical):
        problems.append("the call is not written exactly as format_tool_call writes it")
    elif before and (len(before) > 80 or "\n" in before or not before.endswith(" ")):
        problems.append("text before the call must be one short sentence")
    if event.name == "generate_image" and _SPANISH.search(event.arguments.get("prompt", "")):
        problems.append("image prompt is not English")
    return event.name, problems


def _check_result(message: Message, name: str) -> list[str]:
    try:
        payload = json.loads(message["content"])
    except ValueError:
        return ["tool message is not JSON"]
    if not isinstance(payload, dict) or payload.get("tool") != name or "ok" not in payload:
        return [f"tool message must be format_tool_result for {name!r}"]
    expected = format_tool_result(name, payload["ok"], payload.get("result"), payload.get("error"))
    if message["content"] != expected:
        return ["tool message is not written as format_tool_result writes it"]
    return []


def check_example(example: Any, registry: ToolRegistry, system: str) -> list[str]:
    """What is wrong with one example (empty when nothing).

    After the system message come user, assistant pairs without tool calls (an earlier
    exchange, often none), the request, then assistant, tool, assistant, ... ending with
    an assistant message; every assistant message but the last calls a tool, and each
    tool message is that call's ``format_tool_result``.
    """
    if not isinstance(example, dict):
        return ["not a JSON object"]
    messages = example.get("messages")
    if not isinstance(messages, list) or len(messages) < 3:
        return ["messages must be a list: system, user, assistant..."]
    if any(not isinstance(m, dict) or not isinstance(m.get("content"), str) for m in messages):
        return ["every message needs a string content"]
    problems = []
    if example.get("lang") not in LANGS:
        problems.append(f"lang must be one of {LANGS}")
    if not isinstance(example.get("template"), str) or not example.get("template"):
        problems.append("template id missing")
    roles = [m.get("role") for m in messages]
    if roles[0] != "system" or messages[0]["content"] != system:
        problems.append('the first message must be system_prompt(tools, style="short")')
    if roles[1] != "user":
        problems.append("the second message must be the user's")
    last_user = max(i for i, role in enumerate(roles) if role == "user") if "user" in roles else 1
    for i, message in enumerate(messages[1:last_user]):
        role = "user" if i % 2 == 0 else "assistant"
        unanswered = i == last_user - 2 and role == "user"
        if (
            message.get("role") != role
            or unanswered
            or (role == "assistant" and _parse(message["content"]))
        ):
            problems.append(
                "before the last user message only user, assistant pairs without tool calls"
            )
            break
    first_tool = None
    called: str | None = None
    body = messages[last_user + 1 :]
    for i, message in enumerate(body):
        role = "assistant" if i % 2 == 0 else "tool"
        if message.get("role") != role or (role == "tool" and i == len(body) - 1):
            got = roles[last_user + 1 :]
            problems.append(
                f"after the user message expected assistant, tool, ..., assistant; got {got}"
            )
            break
        if role == "tool":
            problems += _check_result(message, called or "?")
            continue
        called, found = _check_call(message, registry)
        problems += found
        first_tool = first_tool or called
        if called is None and i != len(body) - 1:
            problems.append("an assistant message without a tool call must be the last message")
            break
    if example.get("tool") != first_tool:
        problems.append(
            f"tool field is {example.get('tool')!r} but the first call is {first_tool!r}"
        )
    if example.get("multi_turn") != ("tool" in roles):
        problems.append("multi_turn must say whether a tool result is in the example")
    return problems


def validate(
    train: Sequence[Any],
    valid: Sequence[Any],
    registry: ToolRegistry | None = None,
) -> list[Problem]:
    """Every problem of a split dataset: per example, duplicates, templates leaking."""
    registry = registry or builtin_registry()
    system = system_prompt(list(registry), style="short")
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    templates: dict[str, set[str]] = {"train": set(), "valid": set()}
    for part, examples in (("train", train), ("valid", valid)):
        for number, example in enumerate(examples, 1):
            where = f"{part}.jsonl:{number}"
            found = check_example(example, registry, system)
            problems += [Problem(where, message) for message in found]
            if not isinstance(example, dict) or not isinstance(example.get("messages"), list):
                continue
            if isinstance(example.get("template"), str):
                templates[part].add(example["template"])
            try:
                key = _norm(user_text(example))
            except (StopIteration, KeyError, TypeError, AttributeError):
                continue
            if key in seen:
                problems.append(Problem(where, f"duplicate user message (first at {seen[key]})"))
            else:
                seen[key] = where
    for template in sorted(templates["train"] & templates["valid"]):
        problems.append(Problem("split", f"template {template!r} is in both train and valid"))
    return problems


def validate_dir(folder: Path | None = None, registry: ToolRegistry | None = None) -> list[Problem]:
    """Validate ``train.jsonl`` and ``valid.jsonl`` of a folder."""
    parts = []
    for name in ("train", "valid"):
        path = Path(folder or out_dir()) / f"{name}.jsonl"
        if not path.is_file():
            raise DatasetError(f"{path} is missing; build it with `thau-train dataset build`.")
        parts.append(read_jsonl(path))
    return validate(parts[0], parts[1], registry)


# -- stats ---------------------------------------------------------------------------
class TokenCounter:
    """Tokens with the SmolLM2 tokenizer when llama.cpp can load it, else chars / 3.5."""

    def __init__(self, use_model: bool = True) -> None:
        self._llm: Any = None
        self.method = "estimate (characters / 3.5)"
        if not use_model:
            return
        try:
            from llama_cpp import Llama

            from thau.chat.backends.embedded import default_model_path

            path = default_model_path()
            self._llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
            self.method = f"tokenizer of {path.name}"
        except Exception:  # no llama.cpp or no model: estimate
            self._llm = None

    def __call__(self, text: str) -> int:
        if self._llm is None:
            return round(len(text) / 3.5)
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))


def _percentiles(values: Sequence[int]) -> dict[str, int]:
    ordered = sorted(values)
    if not ordered:
        return {}
    pick = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
    out = {k: ordered[min(len(ordered) - 1, int(q * len(ordered)))] for k, q in pick.items()}
    out["max"] = ordered[-1]
    return out


@dataclass
class Stats:
    total: int
    by_part: dict[str, int]
    by_tool: dict[str, int]
    by_lang: dict[str, int]
    by_kind: dict[str, int]
    multi_turn: int
    hard_negatives: int
    templates: int
    tokens: dict[str, int]  # the whole rendered example, system prompt included
    tokens_without_system: dict[str, int]
    token_method: str
    over_256: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def stats(
    train: Sequence[dict[str, Any]],
    valid: Sequence[dict[str, Any]],
    counter: TokenCounter | None = None,
) -> Stats:
    """Counts per tool/none, language, kind; multi-turn; token length percentiles."""
    counter = counter or TokenCounter()
    examples = [*train, *valid]
    lengths, bodies = [], []
    for example in examples:
        messages = example["messages"]
        lengths.append(counter(render_chatml(messages, add_generation_prompt=False)))
        bodies.append(counter(render_chatml(messages[1:], add_generation_prompt=False)))
    return Stats(
        total=len(examples),
        by_part={"train": len(train), "valid": len(valid)},
        by_tool=dict(sorted(Counter(e.get("tool") or "none" for e in examples).items())),
        by_lang=dict(sorted(Counter(e["lang"] for e in examples).items())),
        by_kind=dict(sorted(Counter(e.get("kind", "?") for e in examples).items())),
        multi_turn=sum(bool(e.get("multi_turn")) for e in examples),
        hard_negatives=sum(str(e.get("kind", "")).startswith("neg_") for e in examples),
        templates=len({e["template"] for e in examples}),
        tokens=_percentiles(lengths),
        tokens_without_system=_percentiles(bodies),
        token_method=counter.method,
        over_256=sum(n > 256 for n in lengths),
    )
