"""A llama.cpp GGUF LoRA read back as peft weights, so that training can start from a
shipped or exported adapter (``thau-train run --init-adapter thau-135m-lora.gguf``).

The inverse of :mod:`export.gguf_adapter`: ``lora_a`` stays, ``lora_b`` of Q and K gets
its rows back in HF order, and the GGUF scale ``alpha / rank`` is folded into ``B`` where
the receiving peft model scales differently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from thau.export.errors import ExportError
from thau.export.gguf_base import PERMUTED_ARCHS, open_gguf, unpermute_rows
from thau.export.lora import LLAMA_CPP_NAMES

if TYPE_CHECKING:
    import numpy as np

HF_NAMES = {short: module for module, short in LLAMA_CPP_NAMES.items()}


@dataclass
class GGUFLora:
    """The pairs of a GGUF LoRA file: ``blk.N.<name>`` -> (A, B) as llama.cpp stores them."""

    path: Path
    arch: str
    alpha: float
    pairs: dict[str, tuple[np.ndarray, np.ndarray]]


def read_gguf_lora(path: str | Path) -> GGUFLora:
    """Read a GGUF written as ``general.type = adapter``, ``adapter.type = lora``."""
    reader = open_gguf(path)
    if reader.get("general.type") != "adapter" or reader.get("adapter.type") != "lora":
        raise ExportError(f"{path} is not a GGUF LoRA adapter (general.type / adapter.type).")
    halves: dict[str, dict[str, np.ndarray]] = {}
    for info in reader.tensors:
        base, _, half = info.name.rpartition(".weight.lora_")
        if half not in ("a", "b"):
            raise ExportError(f"{path}: unexpected tensor {info.name}.")
        halves.setdefault(base, {})[half] = reader.f32(info)
    pairs = {}
    for name, found in sorted(halves.items()):
        if set(found) != {"a", "b"}:
            raise ExportError(f"{path} holds only one half of the LoRA pair {name}.")
        pairs[name] = (found["a"], found["b"])
    if not pairs:
        raise ExportError(f"{path} holds no LoRA tensors.")
    arch = str(reader.get("general.architecture", ""))
    alpha = reader.get("adapter.lora.alpha")
    if alpha is None:
        raise ExportError(f"{path} has no adapter.lora.alpha.")
    return GGUFLora(Path(path), arch, float(alpha), pairs)


def peft_state_dict(
    lora: GGUFLora, *, n_head: int, n_head_kv: int, peft_scale: float, prefix: str
) -> dict[str, np.ndarray]:
    """peft's ``lora_A`` / ``lora_B`` weights (``prefix`` + ``layers.N.<module>``) for a model
    whose LoRA multiplies ``B @ A`` by ``peft_scale``."""
    import numpy as np

    state = {}
    for name, (a, b) in lora.pairs.items():
        _, layer, short = name.split(".", 2)
        if short not in HF_NAMES:
            raise ExportError(f"{lora.path}: {name} has no HF counterpart.")
        rank = a.shape[0]
        b = b * np.float32(lora.alpha / rank / peft_scale)
        if lora.arch in PERMUTED_ARCHS and short == "attn_q":
            b = unpermute_rows(b, n_head)
        elif lora.arch in PERMUTED_ARCHS and short == "attn_k":
            b = unpermute_rows(b, n_head_kv)
        module = f"{prefix}layers.{layer}.{HF_NAMES[short]}"
        state[f"{module}.lora_A.weight"] = np.ascontiguousarray(a, dtype=np.float32)
        state[f"{module}.lora_B.weight"] = np.ascontiguousarray(b, dtype=np.float32)
    return state
