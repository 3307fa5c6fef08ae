"""``thau-train``: build and check the tool-calling dataset, evaluate models.

Each subcommand is added by one function ``add_<name>(subparsers)`` in :data:`COMMANDS`
that builds its parser and sets ``handler``; a new command is one more such function.
Only argparse loads at start-up; a handler imports what it needs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from thau.errors import ThauError
from thau.train.service_cli import add_service_commands

Subparsers = Any  # argparse's _SubParsersAction


def _root() -> Path:
    from thau.resources import datasets_dir

    return datasets_dir()


# -- dataset -------------------------------------------------------------------------
def _dataset_build(args: argparse.Namespace) -> int:
    from thau.train import dataset

    seed = dataset.DEFAULT_SEED if args.seed is None else args.seed
    built = dataset.build(dataset.BuildConfig(seed=seed), seeds_dir=args.seeds)
    problems = dataset.validate(built.train, built.valid)
    if problems:
        for problem in problems[:50]:
            print(problem, file=sys.stderr)
        print(f"thau-train: the built dataset has {len(problems)} problems", file=sys.stderr)
        return 1
    if args.check:
        stale = [
            name
            for name, part in (("train", built.train), ("valid", built.valid))
            if not (args.out / f"{name}.jsonl").is_file()
            or (args.out / f"{name}.jsonl").read_text("utf-8") != dataset.dumps_jsonl(part)
        ]
        if stale:
            print(f"out of date: {', '.join(stale)}; run `thau-train dataset build`")
            return 1
        print(f"{args.out} is up to date ({len(built.train)} + {len(built.valid)} examples)")
        return 0
    paths = dataset.write(built, args.out)
    print(
        f"wrote {len(built.train)} train and {len(built.valid)} valid examples "
        f"({built.dropped_duplicates} duplicates, {built.dropped_eval} eval requests dropped): "
        f"{', '.join(map(str, paths))}"
    )
    return 0


def _dataset_validate(args: argparse.Namespace) -> int:
    from thau.train import dataset

    problems = dataset.validate_dir(args.dir)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problems", file=sys.stderr)
        return 1
    print(f"{args.dir}: valid")
    return 0


def _dataset_stats(args: argparse.Namespace) -> int:
    from thau.train import dataset

    parts = [dataset.read_jsonl(args.dir / f"{name}.jsonl") for name in ("train", "valid")]
    counter = dataset.TokenCounter(use_model=not args.estimate)
    result = dataset.stats(parts[0], parts[1], counter).as_dict()
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    for key, value in result.items():
        shown = (
            ", ".join(f"{k} {v}" for k, v in value.items()) if isinstance(value, dict) else value
        )
        print(f"{key:22} {shown}")
    return 0


def add_dataset(sub: Subparsers) -> None:
    from thau.paths import data_dir
    from thau.resources import source_checkout

    # a checkout rebuilds its committed dataset; an installed THAU writes to the data dir
    out = _root() / "tool_calling" if source_checkout() else data_dir() / "dataset"
    p = sub.add_parser("dataset", help="build, validate or describe the tool-calling dataset")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    build = actions.add_parser("build", help="expand the seeds into train/valid JSONL")
    build.add_argument("--seed", type=int, help="random seed (default: the builder's fixed seed)")
    build.add_argument("--seeds", type=Path, default=_root() / "seeds", help="seed folder")
    build.add_argument("--out", type=Path, default=out, help="output folder")
    build.add_argument(
        "--check", action="store_true", help="only check that the files in --out are current"
    )
    build.set_defaults(handler=_dataset_build)

    validate = actions.add_parser("validate", help="check calls, duplicates and the split")
    validate.add_argument("dir", nargs="?", type=Path, default=out, help="dataset folder")
    validate.set_defaults(handler=_dataset_validate)

    stats = actions.add_parser("stats", help="counts and token length percentiles")
    stats.add_argument("dir", nargs="?", type=Path, default=out, help="dataset folder")
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.add_argument(
        "--estimate", action="store_true", help="estimate tokens (chars / 3.5) without llama.cpp"
    )
    stats.set_defaults(handler=_dataset_stats)


# -- eval ----------------------------------------------------------------------------
def _eval(args: argparse.Namespace) -> int:
    from thau.chat.backends import create_backend
    from thau.chat.config import load_settings
    from thau.train import evaluate

    if args.adapter and args.backend != "embedded":
        raise ThauError("--adapter works with --backend embedded only.")
    settings = load_settings(
        backend=args.backend,
        model=args.model,
        adapter=args.adapter,
        host=args.host,
        grammar=args.grammar,
        tool_gate=args.tool_gate,
    )
    cases = evaluate.load_cases(args.cases)[: args.limit or None]
    selection = create_backend(settings)
    if args.threads and hasattr(selection.backend, "n_threads"):
        selection.backend.n_threads = args.threads  # read when the model loads
    agent = evaluate.make_agent(selection.backend, settings=settings, max_tokens=args.max_tokens)

    def progress(done: int, total: int, outcome: evaluate.Outcome) -> None:
        if not args.quiet:
            said = outcome.predicted or "-"
            print(f"\r{done}/{total} {said:<16}", end="", file=sys.stderr, flush=True)

    print(selection.note, file=sys.stderr)
    result, outcomes = evaluate.evaluate(agent, cases, progress)
    if not args.quiet:
        print(file=sys.stderr)
    failed = sum(bool(o.error) for o in outcomes)
    if failed:
        print(f"thau-train: {failed} cases failed (counted as no call)", file=sys.stderr)
    if args.out:
        title = f"{selection.backend.describe()} on {args.cases.name}"
        paths = evaluate.write_outputs(result, outcomes, args.out, args.name, title)
        print(f"wrote {', '.join(map(str, paths))}", file=sys.stderr)
    print(json.dumps(result, indent=2) if args.json else evaluate.format_report(result))
    return 0


def add_eval(sub: Subparsers) -> None:
    p = sub.add_parser(
        "eval",
        help="measure tool-calling decisions on eval cases",
        description=(
            "Run eval cases through thau-chat's own backend, prompt and parser, greedily, "
            "and score the first reply's decision. With no --model it evaluates the "
            "embedded default: SmolLM2 plus the training service's promoted adapter, else "
            "the shipped THAU adapter."
        ),
    )
    p.add_argument("--backend", choices=["embedded", "ollama", "openai"], default="embedded")
    p.add_argument("--model", help="GGUF path (embedded) or model name (ollama/openai)")
    p.add_argument("--adapter", metavar="PATH|shipped|none", help="GGUF LoRA adapter (embedded)")
    p.add_argument("--host", help="server URL (ollama/openai)")
    p.add_argument(
        "--cases", type=Path, default=_root() / "eval" / "dev.jsonl", help="JSONL eval cases"
    )
    p.add_argument("--limit", type=int, metavar="N", help="only the first N cases")
    p.add_argument("--max-tokens", type=int, default=256, help="tokens per reply (default: 256)")
    p.add_argument(
        "--threads", type=int, metavar="N", help="embedded: CPU threads (default: all cores)"
    )
    p.add_argument(
        "--no-grammar",
        action="store_const",
        const=False,
        dest="grammar",
        help="embedded: don't constrain tool-call JSON with a grammar",
    )
    p.add_argument(
        "--tool-gate",
        type=float,
        metavar="P",
        help="the runtime's confidence gate (embedded THAU adapters): 0 measures each call's "
        "opening probability without refusing (the report gains gate_curve); default: "
        "what thau-chat runs",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--out", type=Path, help="write NAME.json, NAME-confusion.png, NAME-cases.jsonl")
    p.add_argument("--name", default="report", help="file name stem for --out (default: report)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    p.set_defaults(handler=_eval)


# -- run -----------------------------------------------------------------------------
def _run(args: argparse.Namespace) -> int:
    from thau.train.openmp_wait import apply_wait_policy

    # before torch loads: sleeping OpenMP threads on a busy CPU, OpenMP's spin-then-sleep
    # on an idle one (1.4-1.6x faster there); the user's OMP_WAIT_POLICY wins
    apply_wait_policy()
    from thau.train.trainer import run_command

    return run_command(args)


def add_run(sub: Subparsers) -> None:
    from thau.train.presets import add_run_arguments

    p = sub.add_parser(
        "run",
        help="train a LoRA adapter on the tool-calling set",
        description="Train a LoRA adapter from a preset (plain YAML values; flags override "
        "them). Writes the adapter, report.json, loss.png and per-epoch checkpoints.",
    )
    add_run_arguments(p)
    p.set_defaults(handler=_run)


COMMANDS: list[Callable[[Subparsers], None]] = [add_dataset, add_eval, add_run]
COMMANDS.append(add_service_commands)  # the training service: init, add, train, serve...


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thau-train", description="THAU's dataset, training and evaluation tools."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ThauError as exc:
        print(f"thau-train: error: {exc}", file=sys.stderr)
        return 1
