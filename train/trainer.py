"""The LoRA trainer behind ``thau-train run``.

:func:`run_training` reads top to bottom: settings and run folder, data, model, optimizer,
resume, the loop, the outputs. No framework hides the loop; ``accelerate`` only places the
model and batches on the device (cuda, mps or cpu; several GPUs under ``accelerate launch``).

A run folder holds::

    settings.json          the settings (``--resume`` reads them back)
    checkpoints/epoch-N/   adapter + optimizer + scheduler + RNG + step, one per epoch
    adapter/               the final peft adapter (``save_pretrained``)
    report.json            settings, data hash, losses, tokens/s, timings, device, versions
    loss.png               the loss curves

A checkpoint is written into a temporary folder and renamed when complete, so an
interruption loses at most the current epoch and a half-written checkpoint is never read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from thau.errors import ConfigError, ThauError
from thau.paths import data_dir
from thau.train.base_model import chat_template, load_model, load_tokenizer, resolve_base
from thau.train.data_collate import IGNORE, LengthGroupedBatches, PadToLongest, encode_examples
from thau.train.openmp_wait import wait_policy
from thau.train.presets import EXPORTABLE_MODULES, TrainConfig, check_config, config_from_dict

SETTINGS_FILE = "settings.json"
REPORT_FILE = "report.json"
PLOT_FILE = "loss.png"
CHECKPOINTS = "checkpoints"
KEEP_CHECKPOINTS = 2
_EPOCH_DIR = re.compile(r"epoch-(\d+)")


class TrainingInterrupted(ThauError):
    """Ctrl-C or SIGTERM stopped a run; it can be resumed from its last checkpoint."""


def default_out_dir() -> Path:
    """``<data dir>/runs/<timestamp>``."""
    return data_dir() / "runs" / datetime.now().strftime("%Y%m%d-%H%M%S")


# -- the loss ---------------------------------------------------------------------------------
class AssistantLoss(torch.nn.Module):
    """Next-token cross-entropy on labelled (assistant) tokens only.

    Two savings over a plain causal-LM loss, neither of which changes the result:

    - the prefix that every row of the batch shares (the system prompt) runs once, and
      its keys and values are repeated for the rows: gradients through them add up just
      as if each row had run it (only LoRA dropout then draws one mask for the prefix);
    - the LM head runs only where a label is set: with a 49k vocabulary that skips most of
      the head's work and its big logits tensor.

    In training the first ``decision_tokens`` labels of each assistant turn weigh
    ``decision_weight`` (the answer-or-call decision) and the labels inside a tool call's
    JSON arguments weigh ``argument_weight`` (the two multiply where they meet);
    validation weighs every label 1.

    Returns the (weighted) summed loss and the summed weights, so that batches can be
    weighted exactly.
    """

    def __init__(
        self,
        peft_model: Any,
        *,
        decision_tokens: int = 0,
        decision_weight: float = 1.0,
        argument_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.peft_model = peft_model
        self.decision_tokens = decision_tokens
        self.decision_weight = decision_weight
        self.argument_weight = argument_weight

    @staticmethod
    def hidden_states(
        base: Any,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        prefix_len: int = 0,
    ) -> torch.Tensor:
        """The decoder's last hidden states at the positions after the first ``prefix_len``
        (the prefix every row shares runs once; its keys and values are repeated).

        The rows are embedded whole, once, so that an embedding hook (NEFTune's noise, see
        ``add_embedding_noise``) sees the padded length; the shared prefix runs with the
        first row's embeddings.
        """
        decoder = base.get_decoder()
        embeds = base.get_input_embeddings()(input_ids)
        if not prefix_len:
            return decoder(inputs_embeds=embeds, attention_mask=attention_mask)[0]
        from transformers import DynamicCache

        cache = DynamicCache()  # passed in, so that every transformers version fills it
        decoder(inputs_embeds=embeds[:1, :prefix_len], past_key_values=cache, use_cache=True)
        cache.batch_repeat_interleave(input_ids.shape[0])
        return decoder(
            inputs_embeds=embeds[:, prefix_len:],
            attention_mask=attention_mask,  # covers the prefix and the rest
            past_key_values=cache,
            use_cache=True,
        )[0]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        prefix_len: int = 0,
        in_call: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        base = self.peft_model.get_base_model()
        hidden = self.hidden_states(base, input_ids, attention_mask, prefix_len)
        targets = labels[:, prefix_len + 1 :]
        keep = targets != IGNORE
        logits = base.get_output_embeddings()(hidden[:, :-1][keep]).float()
        losses = F.cross_entropy(logits, targets[keep], reduction="none")
        decide = self.decision_weight != 1.0 and self.decision_tokens > 0
        argue = None  # the call-argument labels, when they weigh differently
        if in_call is not None and self.argument_weight != 1.0:
            argue = in_call[:, prefix_len + 1 :]
        if not self.training or not (decide or argue is not None):
            return losses.sum(), keep.sum()
        weights = torch.ones_like(targets, dtype=torch.float32)
        if decide:
            weights *= turn_start_weights(targets, self.decision_tokens, self.decision_weight)
        if argue is not None:
            weights[argue] *= self.argument_weight
        weights = weights[keep]
        return (losses * weights).sum(), weights.sum()


def turn_start_weights(labels: torch.Tensor, first: int, weight: float) -> torch.Tensor:
    """Per-position weights: ``weight`` on the first ``first`` labelled positions of each
    run of labels (an assistant turn), 1 everywhere else."""
    labelled = labels != IGNORE
    before = F.pad(labelled[:, :-1], (1, 0), value=False)
    index = torch.arange(labels.shape[1], device=labels.device).expand_as(labels)
    starts = torch.where(labelled & ~before, index, torch.full_like(index, -1))
    last_start = starts.cummax(dim=1).values
    near = labelled & (last_start >= 0) & (index - last_start < first)
    return torch.where(near, weight, 1.0).to(torch.float32)


# -- LoRA -------------------------------------------------------------------------------------
def add_lora(model: Any, config: TrainConfig) -> Any:
    """Wrap ``model`` with a plain LoRA adapter that the GGUF export can carry."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        use_dora=config.use_dora,
        use_rslora=config.use_rslora,
        modules_to_save=config.modules_to_save,
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        peft_model = get_peft_model(model, lora)
    except ValueError as exc:
        raise ConfigError(f"LoRA does not fit this base: {exc}") from exc
    wrapped = {n.rsplit(".", 1)[-1] for n, m in peft_model.named_modules() if hasattr(m, "lora_A")}
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    if not wrapped <= set(EXPORTABLE_MODULES) or any("lora_" not in n for n in trainable):
        raise ConfigError(f"LoRA reached modules the GGUF export cannot carry: {sorted(wrapped)}.")
    return peft_model


def add_embedding_noise(peft_model: Any, alpha: float) -> None:
    """NEFTune (Jain et al. 2023) through transformers' own hook: in training mode, uniform
    noise of at most alpha / sqrt(length * width) on every token embedding value."""
    try:
        from transformers.integrations.neftune import neftune_post_forward_hook
    except ImportError:  # older transformers keep it in trainer_utils
        from transformers.trainer_utils import neftune_post_forward_hook

    embeddings = peft_model.get_base_model().get_input_embeddings()
    embeddings.neftune_noise_alpha = alpha
    embeddings.register_forward_hook(neftune_post_forward_hook)


def new_optimizer(peft_model: Any, trainable: list[torch.nn.Parameter], config: TrainConfig) -> Any:
    """AdamW; with ``loraplus_ratio`` > 1, LoRA+ (peft's): the B matrices at that many times
    the learning rate of the A matrices."""
    if config.loraplus_ratio == 1.0:
        return torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    from peft.optimizers import create_loraplus_optimizer

    return create_loraplus_optimizer(
        peft_model,
        torch.optim.AdamW,
        lr=config.lr,
        loraplus_lr_ratio=config.loraplus_ratio,
        loraplus_weight_decay=config.weight_decay,
    )


# -- checkpoints ------------------------------------------------------------------------------
def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run (temporary folders are never picked)."""
    found = []
    for path in (run_dir / CHECKPOINTS).glob("epoch-*"):
        match = _EPOCH_DIR.fullmatch(path.name)
        complete = (path / "state.pt").is_file() and (path / "adapter").is_dir()
        if match and complete:
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def save_checkpoint(run_dir: Path, epoch: int, peft_model: Any, state: dict[str, Any]) -> Path:
    """Write ``checkpoints/epoch-N`` atomically: a temporary folder, then a rename."""
    root = run_dir / CHECKPOINTS
    final = root / f"epoch-{epoch:04d}"
    tmp = root / f".tmp-epoch-{epoch:04d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    peft_model.save_pretrained(tmp / "adapter")
    torch.save(state, tmp / "state.pt")
    if final.exists():  # only when a finished run is resumed with more epochs
        shutil.rmtree(final)
    tmp.rename(final)
    done = sorted(p for p in root.glob("epoch-*") if _EPOCH_DIR.fullmatch(p.name))
    for old in done[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _gguf_lora_weights(path: Path, peft_model: Any) -> dict[str, torch.Tensor]:
    """A GGUF LoRA file's weights in peft's names and scale for ``peft_model``."""
    from thau.export.errors import ExportError
    from thau.export.gguf_lora_read import peft_state_dict, read_gguf_lora

    lora_config = peft_model.peft_config["default"]
    model_config = peft_model.get_base_model().config
    try:
        state = peft_state_dict(
            read_gguf_lora(path),
            n_head=model_config.num_attention_heads,
            n_head_kv=getattr(model_config, "num_key_value_heads", None)
            or model_config.num_attention_heads,
            peft_scale=lora_config.lora_alpha / lora_config.r,
            prefix="base_model.model.model.",
        )
    except ExportError as exc:
        raise ConfigError(str(exc)) from exc
    return {key: torch.from_numpy(value) for key, value in state.items()}


def load_adapter_weights(source: Path, peft_model: Any) -> None:
    """Copy the LoRA weights of a saved adapter folder, or of a GGUF LoRA file (such as the
    shipped default adapter), into ``peft_model``."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    if source.is_file() and source.suffix == ".gguf":
        weights = _gguf_lora_weights(source, peft_model)
    else:
        file = source / "adapter_model.safetensors"
        if not file.is_file():
            raise ConfigError(
                f"{source} is neither a peft adapter folder (no {file.name}) nor a GGUF LoRA."
            )
        weights = load_file(str(file))
    ours = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    shapes = sorted(tuple(t.shape) for t in weights.values())
    if shapes != sorted(tuple(p.shape) for p in peft_model.parameters() if p.requires_grad):
        raise ConfigError(
            f"The adapter {source} has another shape ({len(weights)} tensors) than this "
            f"run's LoRA ({len(ours)}): use the same base, lora_r and target_modules."
        )
    result = set_peft_model_state_dict(peft_model, weights)
    if getattr(result, "unexpected_keys", None):
        raise ConfigError(f"{source} does not match this model: {result.unexpected_keys[:3]}")


def load_checkpoint(path: Path, peft_model: Any) -> dict[str, Any]:
    """Load a checkpoint's adapter weights into ``peft_model``; return its state."""
    load_adapter_weights(path / "adapter", peft_model)
    return torch.load(path / "state.pt", weights_only=False)


def load_run_config(run_dir: Path) -> TrainConfig:
    """The settings a run was started with (for ``--resume``)."""
    path = run_dir / SETTINGS_FILE
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a training run (no {SETTINGS_FILE}).")
    return config_from_dict(json.loads(path.read_text("utf-8"))["settings"])


def find_resumable(runs_dir: Path | None = None) -> Path:
    """The most recent run under ``<data dir>/runs`` that has a checkpoint."""
    runs_dir = runs_dir or data_dir() / "runs"
    runs = sorted(p for p in runs_dir.glob("*") if latest_checkpoint(p) is not None)
    if not runs:
        raise ConfigError(f"No run with a checkpoint under {runs_dir}; pass --resume DIR.")
    return runs[-1]


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- small helpers ----------------------------------------------------------------------------
def file_sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_examples(path: Path) -> list[dict[str, Any]]:
    """The examples of a JSONL file (``{"messages": [...]}`` per line)."""
    from thau.train.dataset import read_jsonl

    if not path.is_file():
        raise ConfigError(f"{path} does not exist; build it with `thau-train dataset build`.")
    examples = read_jsonl(path)
    bad = [i for i, e in enumerate(examples, 1) if not isinstance(e.get("messages"), list)]
    if bad:
        raise ConfigError(f"{path}: lines {bad[:5]} have no 'messages' list.")
    return examples


def summed(accelerator: Any, *values: float) -> list[float]:
    """Each value summed over all processes (one process: unchanged)."""
    if accelerator.num_processes == 1:
        return list(values)
    total = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
    return accelerator.reduce(total, reduction="sum").tolist()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX tiles).

    There bf16 autocast trains SmolLM2-135M about 1.35x faster than float32 (1.55x with
    eager attention); elsewhere bf16 is emulated and slower, so ``auto`` keeps float32.
    """
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def mixed_precision(precision: str) -> str:
    """accelerate's ``mixed_precision`` for a preset's ``precision``.

    ``auto``: bf16 autocast on a GPU that has bf16 and on a CPU that computes it natively,
    else float32 (LoRA weights and optimizer state stay float32 either way).
    """
    if precision == "auto":
        if torch.cuda.is_available():
            return "bf16" if torch.cuda.is_bf16_supported() else "no"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "no"
        return "bf16" if cpu_has_native_bf16() else "no"
    return {"fp32": "no"}.get(precision, precision)


def attention_kernel(attention: str, device: torch.device) -> str:
    """transformers' ``attn_implementation`` for a preset's ``attention``.

    ``auto``: plain matmuls (``eager``) on a CPU, where the short rows of the tool-calling
    set train about 15% faster than with ``sdpa``'s kernels; ``sdpa`` elsewhere.
    """
    if attention == "auto":
        return "eager" if device.type == "cpu" else "sdpa"
    return attention


def new_accelerator(config: TrainConfig) -> Any:
    """An ``Accelerator`` for this run's precision and gradient accumulation.

    accelerate keeps one state per process and refuses another precision later; when an
    earlier run in this process (a bench, a notebook, HF ``Trainer``) fixed another one,
    the state is started afresh (the distributed setup is kept).
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    settings = {
        "gradient_accumulation_steps": config.grad_accum,
        "mixed_precision": mixed_precision(config.precision),
    }
    try:
        return Accelerator(**settings)
    except ValueError as exc:
        if "already been initialized" not in str(exc):
            raise
        AcceleratorState._reset_state()
        return Accelerator(**settings)


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("thau", "torch", "transformers", "peft", "accelerate", "gguf"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def device_info(device: torch.device, num_processes: int) -> dict[str, Any]:
    info: dict[str, Any] = {"type": device.type, "processes": num_processes}
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
    elif device.type == "cpu":
        info["threads"] = torch.get_num_threads()
        info["cores"] = os.cpu_count()
        info["omp_wait_policy"] = wait_policy()
    return info


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (``kill``) like Ctrl-C while training, so that the run stops cleanly."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- validation -------------------------------------------------------------------------------
@torch.no_grad()
def validation_loss(loss_model: torch.nn.Module, loader: Any, accelerator: Any) -> float:
    """Mean loss per assistant token over the whole validation set."""
    loss_model.eval()
    total = torch.zeros(2, device=accelerator.device, dtype=torch.float64)
    for batch in loader:
        loss_sum, count = loss_model(**batch)
        total += torch.stack([loss_sum.double(), count.double()])
    total = accelerator.reduce(total, reduction="sum")
    loss_model.train()
    return (total[0] / total[1].clamp(min=1)).item()


# -- outputs ----------------------------------------------------------------------------------
def plot_losses(history: dict[str, list[dict[str, Any]]], path: Path, title: str) -> None:
    """The training loss per step and the validation loss per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    steps = history["train_steps"]
    ax.plot([s["step"] for s in steps], [s["loss"] for s in steps], lw=1, label="train (step)")
    curves = (("train_epochs", "train (epoch mean)", "s"), ("valid_epochs", "valid", "o"))
    for key, label, marker in curves:
        points = [p for p in history[key] if p["loss"] is not None]
        if points:
            xs, ys = [p["step"] for p in points], [p["loss"] for p in points]
            ax.plot(xs, ys, marker=marker, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss per assistant token")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Write JSON through a temporary file, so that a reader never sees half of it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n", "utf-8")
    tmp.replace(path)


def progress_bar(enabled: bool) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[tps]:,.0f} tok/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )


# -- the run ----------------------------------------------------------------------------------
def run_training(
    config: TrainConfig,
    out_dir: Path | None = None,
    *,
    resume: bool = False,
    max_steps: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a LoRA adapter as ``config`` says; return the report (also in ``out_dir``).

    ``resume`` continues ``out_dir`` from its last complete checkpoint, with the same data
    order. ``max_steps`` stops after that many optimizer steps in all (a smoke run, or a
    simulated interruption: the learning-rate schedule still follows ``config.epochs``).
    """
    from accelerate.utils import set_seed
    from rich.console import Console
    from transformers import get_cosine_schedule_with_warmup

    started = time.perf_counter()
    timings = {
        "load_s": 0.0,
        "train_s": 0.0,
        "train_cpu_s": 0.0,
        "valid_s": 0.0,
        "checkpoint_s": 0.0,
    }
    console = Console(stderr=True)
    check_config(config)

    # -- settings and the run folder ----------------------------------------------------------
    train_path, valid_path = Path(config.train_file), Path(config.valid_file)
    data_hash = {"train": file_sha256(train_path), "valid": file_sha256(valid_path)}
    out_dir = Path(out_dir) if out_dir else default_out_dir()
    if resume:
        if not (out_dir / SETTINGS_FILE).is_file():
            raise ConfigError(f"{out_dir} is not a training run (no {SETTINGS_FILE}).")
        saved = json.loads((out_dir / SETTINGS_FILE).read_text("utf-8"))
        if saved["data_sha256"] != data_hash:
            raise ConfigError(
                f"The data changed since {out_dir} started (its sha256 differs), and a resumed "
                "run needs the same files. Start a new run instead."
            )
    elif latest_checkpoint(out_dir) is not None:
        raise ConfigError(f"{out_dir} holds a run already: resume it with --resume, or pick --out.")
    accelerator = new_accelerator(config)
    set_seed(config.seed)

    # -- data ---------------------------------------------------------------------------------
    source = resolve_base(config.base)
    tokenizer = load_tokenizer(source)
    template = chat_template(source)
    train_set = encode_examples(read_examples(train_path), tokenizer, config.max_length, template)
    valid_set = encode_examples(read_examples(valid_path), tokenizer, config.max_length, template)
    if not train_set.examples:
        raise ConfigError(f"{train_path} has no example with an assistant reply.")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = LengthGroupedBatches(
        [len(e) for e in train_set.examples],
        config.batch_size,
        seed=config.seed,
        group_size=config.group_size,
    )
    collate = PadToLongest(pad_id, share_prefix=config.share_prefix)
    train_loader = torch.utils.data.DataLoader(
        train_set.examples, batch_sampler=batches, collate_fn=collate
    )
    valid_batches = LengthGroupedBatches(
        [len(e) for e in valid_set.examples], config.batch_size, shuffle=False
    )
    valid_loader = torch.utils.data.DataLoader(
        valid_set.examples, batch_sampler=valid_batches, collate_fn=collate
    )

    # -- model --------------------------------------------------------------------------------
    base_model = load_model(source, attention_kernel(config.attention, accelerator.device))
    peft_model = add_lora(base_model, config)
    if config.neftune_alpha > 0:
        add_embedding_noise(peft_model, config.neftune_alpha)
    loss_model = AssistantLoss(
        peft_model,
        decision_tokens=config.decision_tokens,
        decision_weight=config.decision_weight,
        argument_weight=config.argument_weight,
    )
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    timings["load_s"] = time.perf_counter() - started

    # -- optimizer and schedule ---------------------------------------------------------------
    total_steps = math.ceil(len(batches) / config.grad_accum) * config.epochs
    optimizer = new_optimizer(peft_model, trainable, config)
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, math.ceil(config.warmup_ratio * total_steps), total_steps
    )

    # -- the run folder, and resume -----------------------------------------------------------
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in (out_dir / CHECKPOINTS).glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)  # a checkpoint whose writing was interrupted
    if not resume:
        write_json(
            out_dir / SETTINGS_FILE, {"settings": config.as_dict(), "data_sha256": data_hash}
        )
    history: dict[str, list[dict[str, Any]]] = {
        "train_steps": [],
        "train_epochs": [],
        "valid_epochs": [],
    }
    start_epoch, step, tokens_seen, labels_seen, state = 0, 0, 0, 0, None
    checkpoint = latest_checkpoint(out_dir) if resume else None
    if resume and checkpoint is None:
        console.print(f"no complete checkpoint in {out_dir} yet: starting from the beginning")
    if checkpoint is None and config.init_adapter:
        load_adapter_weights(Path(config.init_adapter), peft_model)
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, peft_model)
        start_epoch, step, history = state["epoch"], state["step"], state["history"]
        tokens_seen, labels_seen = state["tokens"], state["labels"]
        timings.update(state["timings"])
        console.print(f"resuming {out_dir} after epoch {start_epoch} (step {step})")

    loss_model, optimizer, train_loader, valid_loader, scheduler = accelerator.prepare(
        loss_model, optimizer, train_loader, valid_loader, scheduler
    )
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
    steps_per_epoch = math.ceil(len(train_loader) / config.grad_accum)  # of this process

    def report(status: str) -> dict[str, Any]:
        train_s = timings["train_s"]
        return {
            "status": status,
            "out_dir": str(out_dir),
            "adapter": str(out_dir / "adapter"),
            "settings": config.as_dict(),
            "base": {
                "source": source.describe(),
                "chat_template": template.name,
                "parameters": sum(p.numel() for p in peft_model.parameters()),
                "trainable_parameters": sum(p.numel() for p in trainable),
            },
            "data": {
                "train_file": str(train_path),
                "valid_file": str(valid_path),
                "sha256": data_hash,
                "train_examples": len(train_set.examples),
                "valid_examples": len(valid_set.examples),
                "truncated": train_set.truncated + valid_set.truncated,
                "dropped": train_set.dropped + valid_set.dropped,
                "train_tokens_per_epoch": train_set.tokens,
                "train_label_tokens_per_epoch": train_set.label_tokens,
            },
            "steps": step,
            "steps_per_epoch": steps_per_epoch,
            "epochs_done": len(history["train_epochs"]),
            "losses": history,
            "tokens": {"trained": tokens_seen, "labelled": labels_seen},
            "tokens_per_s": tokens_seen / train_s if train_s else None,
            "tokens_per_cpu_s": tokens_seen / cpu_s if (cpu_s := timings["train_cpu_s"]) else None,
            "timings": {**timings, "total_s": time.perf_counter() - started},
            "device": {
                **device_info(accelerator.device, accelerator.num_processes),
                "mixed_precision": accelerator.mixed_precision,
                "attention": base_model.config._attn_implementation,
            },
            "versions": versions(),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    # -- the loop -----------------------------------------------------------------------------
    status = "complete"
    console.print(
        f"training {source.describe()} on {len(train_set.examples)} examples "
        f"({train_set.tokens:,} tokens/epoch), {steps_per_epoch} steps/epoch, "
        f"device {accelerator.device}, out {out_dir}"
    )
    loss_model.train()  # from_pretrained leaves the model in eval mode (no LoRA dropout)
    try:
        with sigterm_as_interrupt(), progress_bar(progress and accelerator.is_main_process) as bar:
            for epoch in range(start_epoch, config.epochs):
                batches.set_epoch(epoch)  # the data order is a function of seed and epoch
                train_loader.set_epoch(epoch)  # accelerate's loader passes its own count on
                task = bar.add_task(
                    "", total=steps_per_epoch, epoch=f"{epoch + 1}/{config.epochs}", loss=0, tps=0
                )
                epoch_loss, epoch_labels, epoch_tokens, epoch_steps = 0.0, 0.0, 0, 0
                step_loss, step_labels, epoch_labelled = 0.0, 0.0, 0
                tick, cpu_tick = time.perf_counter(), time.process_time()
                for batch in train_loader:
                    with accelerator.accumulate(loss_model):
                        loss_sum, count = loss_model(**batch)
                        accelerator.backward(loss_sum / count)
                        if accelerator.sync_gradients:
                            accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
                        optimizer.step()  # these three wait for grad_accum batches
                        scheduler.step()
                        optimizer.zero_grad()
                    step_loss += loss_sum.item()
                    step_labels += float(count)
                    epoch_labelled += int((batch["labels"] != IGNORE).sum())
                    epoch_tokens += int(batch["attention_mask"].sum())
                    if not accelerator.sync_gradients:
                        continue
                    step, epoch_steps = step + 1, epoch_steps + 1
                    epoch_loss, epoch_labels = epoch_loss + step_loss, epoch_labels + step_labels
                    loss, lr = step_loss / step_labels, scheduler.get_last_lr()[0]
                    history["train_steps"].append(
                        {"step": step, "epoch": epoch + 1, "loss": loss, "lr": lr}
                    )
                    step_loss, step_labels = 0.0, 0.0
                    tps = epoch_tokens * accelerator.num_processes / (time.perf_counter() - tick)
                    bar.update(task, advance=1, loss=loss, tps=tps)
                    if max_steps is not None and step >= max_steps:
                        break
                timings["train_s"] += time.perf_counter() - tick
                timings["train_cpu_s"] += time.process_time() - cpu_tick  # all threads
                epoch_loss, epoch_labels, epoch_tokens, epoch_labelled = summed(
                    accelerator, epoch_loss, epoch_labels, epoch_tokens, epoch_labelled
                )
                tokens_seen += int(epoch_tokens)
                labels_seen += int(epoch_labelled)
                if epoch_steps < steps_per_epoch:
                    status = "max_steps"  # stopped inside the epoch: no checkpoint, as after a kill
                    break

                tick = time.perf_counter()
                valid = None  # no validation examples
                if valid_set.examples:
                    valid = validation_loss(loss_model, valid_loader, accelerator)
                timings["valid_s"] += time.perf_counter() - tick
                mean = epoch_loss / epoch_labels
                history["train_epochs"].append({"epoch": epoch + 1, "step": step, "loss": mean})
                history["valid_epochs"].append({"epoch": epoch + 1, "step": step, "loss": valid})
                shown = "-" if valid is None else f"{valid:.4f}"
                bar.console.print(f"epoch {epoch + 1}: train loss {mean:.4f}, valid {shown}")

                tick = time.perf_counter()
                if accelerator.is_main_process:
                    save_checkpoint(
                        out_dir,
                        epoch + 1,
                        accelerator.unwrap_model(loss_model).peft_model,
                        {
                            "epoch": epoch + 1,
                            "step": step,
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(),
                            "rng": rng_state(),
                            "tokens": tokens_seen,
                            "labels": labels_seen,
                            "history": history,
                            "timings": {
                                k: timings[k] for k in ("train_s", "train_cpu_s", "valid_s")
                            },
                        },
                    )
                accelerator.wait_for_everyone()
                timings["checkpoint_s"] += time.perf_counter() - tick
                if max_steps is not None and step >= max_steps:
                    status = "max_steps"
                    break
    except KeyboardInterrupt:
        if accelerator.is_main_process:
            write_json(out_dir / REPORT_FILE, report("interrupted"))
        raise TrainingInterrupted(
            "Interrupted; every complete epoch is kept. Continue with "
            f"`thau-train run --resume {out_dir}`."
        ) from None

    # -- outputs ------------------------------------------------------------------------------
    result = report(status)
    if accelerator.is_main_process:
        accelerator.unwrap_model(loss_model).peft_model.save_pretrained(out_dir / "adapter")
        write_json(out_dir / REPORT_FILE, result)
        plot_losses(history, out_dir / PLOT_FILE, f"{config.preset}: {source.describe()}")
    return result


# -- thau-train run ---------------------------------------------------------------------------
def run_command(args: Any) -> int:
    """``thau-train run``: settings from the preset and flags (or the resumed run), then train."""
    from rich.console import Console

    from thau.train.presets import OVERRIDES, load_preset

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {field: getattr(args, flag) for flag, field in OVERRIDES.items()}
    overrides = {k: str(v) if isinstance(v, Path) else v for k, v in overrides.items()}
    if args.resume is not None:
        out_dir = Path(args.resume) if args.resume else args.out or find_resumable()
        config = load_run_config(out_dir)
        changed = sorted(k for k, v in overrides.items() if v is not None and k != "epochs")
        if changed:
            raise ConfigError(
                f"--resume keeps the run's settings; drop {', '.join(changed)} "
                "(only --epochs, --max-steps and --threads may change)."
            )
        if overrides["epochs"] is not None:
            config.epochs = overrides["epochs"]
    else:
        out_dir = args.out
        config = load_preset(args.preset, **overrides)
    try:
        result = run_training(
            config,
            out_dir,
            resume=args.resume is not None,
            max_steps=args.max_steps,
            progress=not args.no_progress,
        )
    except TrainingInterrupted as exc:
        Console(stderr=True).print(str(exc))
        return 130
    tps = result["tokens_per_s"] or 0.0
    Console(stderr=True).print(
        f"{result['status']}: {result['steps']} steps, {tps:,.0f} tokens/s, "
        f"{result['timings']['total_s']:.0f} s; adapter in {result['adapter']}"
    )
    return 0
