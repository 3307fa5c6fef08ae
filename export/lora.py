"""Reading a peft LoRA adapter folder (``save_pretrained`` output) without torch.

Each adapted projection becomes a :class:`LoraPair`: ``A`` (rank x in), ``B``
(out x rank) and peft's scale (``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA),
keyed by llama.cpp's tensor name (``blk.3.attn_q``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thau.export.errors import ExportError

if TYPE_CHECKING:
    import numpy as np

# HF module (llama family) -> llama.cpp tensor name.
LLAMA_CPP_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}

_KEY_RE = re.compile(
    r"^(?P<module>(?:.*\.)?layers\.(?P<layer>\d+)\.(?P<proj>self_attn\.\w+|mlp\.\w+))"
    r"\.lora_(?P<ab>[AB])(?:\.\w+)?\.weight$"
)


@dataclass
class LoraPair:
    """One adapted projection."""

    name: str  # llama.cpp base name, e.g. blk.0.attn_q
    a: np.ndarray  # (rank, in)
    b: np.ndarray  # (out, rank)
    scale: float  # what peft multiplies B @ A by

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])

    def delta(self) -> np.ndarray:
        """``scale * B @ A`` in HF orientation ``(out, in)``, float32."""
        import numpy as np

        product = self.b.astype(np.float64) @ self.a.astype(np.float64)
        return (self.scale * product).astype(np.float32)


@dataclass
class LoraAdapter:
    """A peft LoRA adapter: its config and its pairs in llama.cpp naming."""

    path: Path
    config: dict[str, Any]
    pairs: dict[str, LoraPair]

    @property
    def alpha(self) -> float:
        """The global alpha in llama.cpp's sense (scale = alpha / rank)."""
        rank = float(self.config.get("r", 8))
        alpha = float(self.config.get("lora_alpha", rank))
        return alpha * math.sqrt(rank) if self.config.get("use_rslora") else alpha


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """peft's ``rank_pattern`` / ``alpha_pattern`` lookup for a module name."""
    for pattern, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return default


def _load_tensors(path: Path) -> dict[str, np.ndarray]:
    """Tensors of ``adapter_model.safetensors`` as float32 numpy arrays."""
    import numpy as np

    try:
        from safetensors.numpy import load_file

        return {k: v.astype(np.float32) for k, v in load_file(path).items()}
    except (TypeError, ValueError):  # bfloat16 has no numpy dtype: go through torch
        from safetensors.torch import load_file as load_torch

        return {k: v.float().numpy() for k, v in load_torch(path).items()}


def load_adapter(folder: str | Path) -> LoraAdapter:
    """Read ``adapter_config.json`` and ``adapter_model.safetensors`` from ``folder``."""
    folder = Path(folder)
    config_path = folder / "adapter_config.json"
    weights_path = folder / "adapter_model.safetensors"
    if not config_path.is_file() or not weights_path.is_file():
        raise ExportError(
            f"{folder} is not a peft adapter folder (adapter_config.json and "
            "adapter_model.safetensors are needed); pass the trainer's <out>/adapter."
        )
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("peft_type", "LORA") != "LORA":
        raise ExportError(f"Only LoRA adapters can be exported, not {config['peft_type']}.")
    if config.get("use_dora"):
        raise ExportError("DoRA adapters cannot be exported to llama.cpp; train with plain LoRA.")
    halves: dict[str, dict[str, Any]] = {}
    for key, value in _load_tensors(weights_path).items():
        found = _KEY_RE.match(key)
        if found is None or found["proj"] not in LLAMA_CPP_NAMES:
            raise ExportError(
                f"Adapter tensor {key} has no llama.cpp counterpart; only "
                f"{', '.join(LLAMA_CPP_NAMES)} of each layer can be exported."
            )
        name = f"blk.{int(found['layer'])}.{LLAMA_CPP_NAMES[found['proj']]}"
        entry = halves.setdefault(name, {"module": found["module"]})
        entry[found["ab"]] = value
    alpha_default = float(config.get("lora_alpha", config.get("r", 8)))
    pairs = {}
    for name, entry in sorted(halves.items()):
        if "A" not in entry or "B" not in entry:
            raise ExportError(f"{weights_path} holds only one half of the LoRA pair {name}.")
        a, b = entry["A"], entry["B"]
        rank = int(a.shape[0])
        if b.shape[1] != rank:
            raise ExportError(f"LoRA pair {name}: A has rank {rank} but B {b.shape[1]}.")
        module = entry["module"].removeprefix("base_model.model.")
        alpha = float(_pattern_value(config.get("alpha_pattern", {}), module, alpha_default))
        scale = alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
        pairs[name] = LoraPair(name=name, a=a, b=b, scale=scale)
    if not pairs:
        raise ExportError(f"{weights_path} holds no LoRA weights.")
    return LoraAdapter(path=folder, config=config, pairs=pairs)
