"""The training service's ``thau-train`` subcommands: init, add, import-data, status,
train, version, start and serve.

:func:`add_service_commands` adds them all to ``thau-train``'s subparsers. The service
lives in ``<data dir>/train_service`` (``THAU_DATA_DIR`` moves the data dir).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from thau.errors import ConfigError
from thau.train.service import SIZES


def _open() -> Any:
    from thau.train.service import TrainingService

    return TrainingService.open()


def _print(value: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(value, indent=2, ensure_ascii=False))
        return
    for key, item in value.items():
        shown = json.dumps(item, ensure_ascii=False) if isinstance(item, dict | list) else item
        print(f"{key:26} {shown}")


# -- handlers ------------------------------------------------------------------------------
def _init(args: argparse.Namespace) -> int:
    from thau.chat.backends.embedded import default_adapter_path
    from thau.train.service import ServiceConfig, ServicePaths

    paths = ServicePaths.default()
    if paths.config.is_file() and not args.force:
        raise ConfigError(f"{paths.config} exists; pass --force to replace its settings.")
    values = {
        "min_new_examples": args.min_new_examples,
        "auto_train_interval_hours": args.interval_hours,
        "regression_margin": args.margin,
        "eval_limit": args.eval_limit,
        "ollama_host": args.ollama_host,
        "dataset_dir": str(args.dataset) if args.dataset else None,
        "base_gguf": str(args.base_gguf) if args.base_gguf else None,
    }
    config = ServiceConfig.for_size(args.size, **{k: v for k, v in values.items() if v is not None})
    if args.preset:
        config.preset = args.preset
    shipped = default_adapter_path(args.size)
    if args.start_adapter:
        config.start_adapter = str(args.start_adapter.resolve())
    elif shipped and not (args.preset or args.base_gguf or args.from_base):
        config.start_adapter = str(shipped)  # what `thau-chat` runs today is the bar to clear
    config.ollama = not args.no_ollama
    for item in args.train_arg or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--train-arg takes KEY=VALUE, got {item!r}")
        config.train_overrides[key.replace("-", "_")] = value
    config.save(paths.config)
    start = f", starting from {config.start_adapter}" if config.start_adapter else ""
    print(f"training service for {config.size} (preset {config.preset}){start} in {paths.root}")
    return 0


def _add(args: argparse.Namespace) -> int:
    from thau.train_queue import normalize

    if args.from_conversation:
        return _add_from_conversation(args)
    if args.turn is not None or args.fix is not None:
        raise ConfigError("--turn and --fix go with --from-conversation ID")
    if args.question is None or args.answer is None:
        raise ConfigError("give QUESTION and ANSWER, or --from-conversation ID")
    record: dict[str, Any] = {"instruction": args.question, "output": args.answer}
    if args.input:
        record["input"] = args.input
    if args.metadata:
        try:
            record["metadata"] = json.loads(args.metadata)
        except ValueError as exc:
            raise ConfigError(f"--metadata is not JSON: {exc}") from None
    service = _open()
    new_id, new = service.store.add(normalize(record))
    pending = service.store.counts()["pending"]
    print(f"{'added' if new else 'already queued'}: example {new_id}; {pending} pending")
    return 0


def _add_from_conversation(args: argparse.Namespace) -> int:
    """A turn of a saved chat, as it was or with ``--fix``: what ``/good`` and ``/fix`` do."""
    from thau.chat import feedback
    from thau.chat.conversation import Conversation
    from thau.paths import data_dir
    from thau.tools.registry import ToolRegistry

    if args.question is not None or args.input or args.metadata:
        raise ConfigError("--from-conversation takes no QUESTION, ANSWER, --input or --metadata")
    conversation = Conversation.load(data_dir() / "conversations", args.from_conversation)
    registry = ToolRegistry.from_entry_points()
    done = feedback.correction(
        conversation, registry, fix=args.fix, turn=args.turn, how="--fix TEXT"
    )
    service = _open()
    new_id, new = service.store.add(done.example)
    queued = feedback.Queued(new_id, new, service.store.counts()["pending"], service=True)
    print(feedback.confirmation(done, queued))
    return 0


def _import(args: argparse.Namespace) -> int:
    from thau.train_queue import parse_jsonl

    if not args.file.is_file():
        raise ConfigError(f"{args.file} does not exist.")
    examples, errors = parse_jsonl(args.file)
    for line, problem in errors:
        print(f"{args.file}:{line}: {problem}", file=sys.stderr)
    if errors and not args.skip_invalid:
        print(
            f"thau-train: {len(errors)} invalid lines; nothing imported "
            "(fix them, or pass --skip-invalid to import the valid ones)",
            file=sys.stderr,
        )
        return 1
    result = _open().store.add_many(examples)
    skipped = f", {len(errors)} invalid lines skipped" if errors else ""
    print(f"imported {result.added}, {result.duplicates} duplicates{skipped}")
    return 0


def _status(args: argparse.Namespace) -> int:
    service = _open()
    out = service.status()
    out["examples"] = service.store.counts()
    _print(out, args.json)
    return 0


def _train(args: argparse.Namespace) -> int:
    result = _open().run_cycle(force=not args.threshold)
    _print(result.as_dict(), args.json)
    return 1 if result.status in {"failed", "busy"} else 0


def _version(args: argparse.Namespace) -> int:
    service = _open()
    state = service.state()
    current = service.current_version()
    if args.json:
        print(json.dumps({"current": current, "versions": state["versions"]}, indent=2))
        return 0
    if not state["versions"]:
        print("no version yet")
        return 0
    for version in state["versions"]:
        mark = "*" if current and version["number"] == current["number"] else " "
        accuracy = version["metrics"].get("decision_accuracy")
        print(f"{mark} {version['name']:20} {version['created']}  decision_accuracy {accuracy}")
    return 0


def _start(args: argparse.Namespace) -> int:
    import signal
    import threading

    from thau.train.service import Scheduler

    scheduler = Scheduler(_open(), args.interval_hours * 3600 if args.interval_hours else None)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    scheduler.start()
    hours = scheduler.interval_s / 3600
    print(f"scheduler running: a cycle every {hours:g} h; Ctrl-C stops it", file=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        done.wait()
    scheduler.stop(cancel=True)
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from thau.train.api import API_KEY_ENV, check_bind, create_app

    api_key = os.environ.get(API_KEY_ENV) or None
    check_bind(args.host, api_key)  # before anything else opens
    app = create_app(
        _open(),
        api_key=api_key,
        host=args.host,
        start_scheduler=not args.no_scheduler,
        rate_limit_per_minute=args.rate_limit,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


# -- parsers -------------------------------------------------------------------------------
def add_service_commands(sub: Any) -> None:
    """Add the training service's subcommands to ``thau-train``."""
    p = sub.add_parser("init", help="set up the incremental training service in the data dir")
    p.add_argument("--size", choices=list(SIZES), default="135m", help="model size (the preset)")
    p.add_argument("--preset", help="a preset name or YAML file instead of the size's preset")
    p.add_argument("--min-new-examples", type=int, metavar="N", help="pending examples to train")
    p.add_argument("--interval-hours", type=float, metavar="H", help="hours between checks")
    p.add_argument("--margin", type=float, help="how far a metric may fall before refusing")
    p.add_argument("--dataset", type=Path, help="balanced dataset folder for replay")
    p.add_argument("--eval-limit", type=int, metavar="N", help="only the first N eval cases")
    p.add_argument(
        "--base-gguf", type=Path, help="the base as GGUF for export and eval (other sizes)"
    )
    p.add_argument(
        "--start-adapter",
        type=Path,
        metavar="PATH",
        help="LoRA (peft folder or GGUF) the first version trains from and must beat "
        "(default for 135m: the adapter shipped with thau-chat)",
    )
    p.add_argument(
        "--from-base", action="store_true", help="start from the base model, not an adapter"
    )
    p.add_argument("--ollama-host", help="Ollama server to register versions with")
    p.add_argument("--no-ollama", action="store_true", help="don't register versions in Ollama")
    p.add_argument(
        "--train-arg",
        action="append",
        metavar="KEY=VALUE",
        help="a `thau-train run` option for every cycle (e.g. epochs=2); repeatable",
    )
    p.add_argument("--force", action="store_true", help="replace existing settings")
    p.set_defaults(handler=_init)

    p = sub.add_parser(
        "add",
        help="queue one example",
        description="Queue QUESTION with ANSWER, or a turn of a saved chat (--from-conversation)"
        " with its context and system prompt, as it was or with --fix as the right reply.",
    )
    p.add_argument("question", nargs="?", help="the instruction (the user's message)")
    p.add_argument("answer", nargs="?", help="the reply the model should learn")
    p.add_argument("--input", help="extra input appended to the instruction")
    p.add_argument("--metadata", help="a JSON object kept with the example")
    p.add_argument(
        "--from-conversation", metavar="ID", help="a saved conversation (id, prefix or file)"
    )
    p.add_argument("--turn", type=int, metavar="N", help="its Nth user message (default: last)")
    p.add_argument(
        "--fix",
        metavar="TEXT",
        help='the right reply: an answer, <TOOL:name>{...}</TOOL>, "no tool" or "no tool: TEXT"',
    )
    p.set_defaults(handler=_add)

    p = sub.add_parser("import-data", help="queue the examples of a JSONL file")
    p.add_argument("file", type=Path, help="{instruction,input?,output} or {messages} per line")
    p.add_argument("--skip-invalid", action="store_true", help="import the valid lines anyway")
    p.set_defaults(handler=_import)

    p = sub.add_parser("status", help="queue counts, current version, running cycle")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_status)

    p = sub.add_parser("train", help="run a train/evaluate/promote cycle now")
    p.add_argument(
        "--threshold", action="store_true", help="only train when min_new_examples are pending"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_train)

    p = sub.add_parser("version", help="the current version and every promoted one")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_version)

    p = sub.add_parser("start", help="run the scheduler in the foreground")
    p.add_argument("--interval-hours", type=float, metavar="H", help="override the interval")
    p.set_defaults(handler=_start)

    p = sub.add_parser("serve", help="the REST API plus the scheduler")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    p.add_argument("--port", type=int, default=8001, help="port (default: %(default)s)")
    p.add_argument("--no-scheduler", action="store_true", help="API only, no automatic cycles")
    p.add_argument("--rate-limit", type=int, default=120, help="requests per client per minute")
    p.set_defaults(handler=_serve)
