"""``thau-export``: adapters and merged models to GGUF, Modelfiles, Ollama, versions."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from thau.errors import ThauError
from thau.export.errors import ExportError


def _base(given: str | None) -> Path:
    """``--base``: a GGUF path or a packaged base's name (default: SmolLM2-135M's GGUF)."""
    from thau.base_models import DEFAULT_BASE, PACKAGED, packaged_base_path

    if given and given not in PACKAGED:
        return Path(given)
    return packaged_base_path(given or DEFAULT_BASE)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def cmd_adapter(args: argparse.Namespace) -> int:
    from thau.export.gguf_adapter import export_adapter

    base = _base(args.base)
    done = export_adapter(args.adapter, base, args.out, outtype=args.outtype)
    print(
        f"Wrote {done.path} ({done.tensors} tensors, alpha {done.alpha:g}, "
        f"{done.arch}, {_size(done.bytes)})."
    )
    return 0


def cmd_merged(args: argparse.Namespace) -> int:
    from thau.export.gguf_merge import export_merged_gguf, export_merged_safetensors

    base = _base(args.base)
    if args.format == "safetensors":
        if not args.adapter:
            raise ExportError("--format safetensors needs --adapter.")
        done = export_merged_safetensors(args.adapter, base, args.out)
    else:
        done = export_merged_gguf(args.adapter, base, args.out, outtype=args.outtype)
    print(
        f"Wrote {done.path} ({done.outtype}, {done.merged_tensors} tensors merged, "
        f"{_size(done.bytes)})."
    )
    return 0


def cmd_modelfile(args: argparse.Namespace) -> int:
    from thau.export.modelfile import build_modelfile, render_presets
    from thau.resources import modelfiles_dir, source_checkout

    if args.all:
        if not args.out and not source_checkout():
            raise ExportError(
                "--all needs --out FOLDER: the shipped Modelfiles are part of the installed "
                "package and are not rewritten."
            )
        for path in render_presets(Path(args.out) if args.out else modelfiles_dir()):
            print(f"Wrote {path}")
        return 0
    text = build_modelfile(args.preset, adapter=args.adapter, from_=args.from_).render()
    if not args.out or args.out == "-":
        sys.stdout.write(text)
        return 0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"Wrote {out}")
    return 0


def cmd_ollama(args: argparse.Namespace) -> int:
    from thau.export.ollama_register import register
    from thau.export.versions import scalar_metrics

    metrics = {}
    if args.metrics:
        try:
            metrics = scalar_metrics(json.loads(Path(args.metrics).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise ExportError(f"--metrics {args.metrics} is not a readable JSON file.") from exc
    done = register(
        args.name,
        adapter=Path(args.adapter) if args.adapter else None,
        from_=args.from_,
        host=args.host,
        metrics=metrics,
        alias=not args.no_alias,
        on_status=lambda status: print(f"  {status}"),
    )
    if not done.created:
        print(f"No Ollama server answers; the Modelfile is at {done.modelfile}. Run:")
        print(done.command)
        return 0
    names = ", ".join([done.version.name, *done.aliases])
    print(f"Created {names} in Ollama at {done.version.ollama_host}.")
    return 0


def cmd_base(args: argparse.Namespace) -> int:
    import shutil

    from thau.base_models import packaged_base_path
    from thau.export.modelfile import preset

    chosen = preset(args.name)
    if chosen.packaged_base is None:
        raise ExportError(f"{chosen.name} runs FROM {chosen.ollama_base}: `ollama pull` it.")
    source = packaged_base_path(chosen.packaged_base)
    out = Path(args.out)
    if out.is_dir():
        out = out / source.name
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    shutil.copyfile(source, part)
    part.replace(out)
    print(f"Wrote {out} ({_size(out.stat().st_size)}), the base of {chosen.name}.")
    return 0


def cmd_versions(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from thau.export.versions import VersionRegistry, format_versions

    versions = VersionRegistry().list(args.size)
    if args.json:
        print(json.dumps([asdict(v) for v in versions], indent=2, ensure_ascii=False))
    else:
        print(format_versions(versions))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thau-export", description="Export THAU LoRA adapters to GGUF and Ollama."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    adapter = sub.add_parser("adapter", help="a peft adapter as a llama.cpp GGUF LoRA")
    adapter.add_argument("--adapter", required=True, help="peft adapter folder")
    adapter.add_argument(
        "--base", help="base GGUF, or a packaged base: gemma3-270m (default: SmolLM2-135M's)"
    )
    adapter.add_argument("--out", required=True, help="GGUF file to write")
    adapter.add_argument("--outtype", choices=("f32", "f16"), default="f32")
    adapter.set_defaults(run=cmd_adapter)

    merged = sub.add_parser("merged", help="base plus adapter merged into one model")
    merged.add_argument("--adapter", help="peft adapter folder (none: only convert the base)")
    merged.add_argument(
        "--base", help="base GGUF, or a packaged base: gemma3-270m (default: SmolLM2-135M's)"
    )
    merged.add_argument("--out", required=True, help="GGUF file or folder to write")
    merged.add_argument("--outtype", choices=("f32", "f16", "q8_0"), default="f16")
    merged.add_argument("--format", choices=("gguf", "safetensors"), default="gguf")
    merged.set_defaults(run=cmd_merged)

    modelfile = sub.add_parser("modelfile", help="render an Ollama Modelfile")
    modelfile.add_argument("--preset", default="thau-135m", help="thau-135m, thau-360m, ...")
    modelfile.add_argument("--adapter", help="GGUF LoRA for the ADAPTER line")
    modelfile.add_argument("--from", dest="from_", help="FROM (default: the preset's base)")
    modelfile.add_argument("--out", help="file to write (default: stdout)")
    modelfile.add_argument(
        "--all", action="store_true", help="render every preset into Modelfiles/ (or --out)"
    )
    modelfile.set_defaults(run=cmd_modelfile)

    ollama = sub.add_parser("ollama", help="create the next thau-<size>-vN in Ollama")
    ollama.add_argument("--name", default="thau-135m", help="preset (default: thau-135m)")
    ollama.add_argument("--host", help="Ollama URL (default: $OLLAMA_HOST or localhost:11434)")
    ollama.add_argument("--adapter", help="GGUF LoRA (default: the preset's adapter file)")
    ollama.add_argument("--from", dest="from_", help="Ollama base model")
    ollama.add_argument("--metrics", help="eval report JSON to keep with the version")
    ollama.add_argument(
        "--no-alias", action="store_true", help="do not point the plain name at the new version"
    )
    ollama.set_defaults(run=cmd_ollama)

    base = sub.add_parser("base", help="write a packaged base GGUF (thau-270m's) for FROM")
    base.add_argument("--name", default="thau-270m", help="preset (default: thau-270m)")
    base.add_argument("--out", required=True, help="file or folder to write")
    base.set_defaults(run=cmd_base)

    versions = sub.add_parser("versions", help="list the recorded model versions")
    versions.add_argument("--size", help="only this size, e.g. 135m")
    versions.add_argument("--json", action="store_true")
    versions.set_defaults(run=cmd_versions)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ThauError as exc:
        print(f"thau-export: {exc}", file=sys.stderr)
        return 1
