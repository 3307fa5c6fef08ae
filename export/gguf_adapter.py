"""A peft LoRA adapter as a llama.cpp GGUF LoRA (``llama-cpp-python``'s ``lora_path``,
Ollama's ``ADAPTER``).

The file follows llama.cpp's adapter convention: ``general.type = adapter``,
``adapter.type = lora``, ``adapter.lora.alpha``, the base's ``general.architecture``,
and for each adapted projection ``blk.N.<name>.weight.lora_a`` (numpy ``(rank, in)``)
and ``...lora_b`` (``(out, rank)``). llama.cpp applies ``alpha / rank * B @ A``, where
``rank`` is read from each ``lora_b``. ``B`` of Q and K gets the base's row permutation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from thau.export.errors import ExportError
from thau.export.gguf_base import BaseModelInfo, base_info, finish, open_gguf, permute_rows
from thau.export.lora import LoraAdapter, LoraPair, load_adapter

if TYPE_CHECKING:
    import numpy as np

ADAPTER_OUTTYPES = ("f32", "f16")


@dataclass
class AdapterExport:
    """What :func:`export_adapter` wrote."""

    path: Path
    arch: str
    alpha: float
    tensors: int
    bytes: int


def check_fits(pair: LoraPair, base: BaseModelInfo) -> None:
    """An error unless ``pair`` adapts a tensor of ``base`` with the same shape."""
    weight = f"{pair.name}.weight"
    shape = base.tensor_shapes.get(weight)
    if shape is None:
        raise ExportError(f"The base {base.path.name} has no tensor {weight} for the adapter.")
    if (pair.b.shape[0], pair.a.shape[1]) != shape:
        raise ExportError(
            f"The adapter does not fit {base.path.name}: {weight} is {shape} but the LoRA "
            f"gives {(pair.b.shape[0], pair.a.shape[1])}. Was it trained on another base?"
        )


def in_base_order(matrix: np.ndarray, name: str, base: BaseModelInfo) -> np.ndarray:
    """``matrix`` (rows = output features) with the rows of Q and K permuted like the
    base's own weights."""
    if base.permutes_qk and name.endswith(".attn_q"):
        return permute_rows(matrix, base.n_head)
    if base.permutes_qk and name.endswith(".attn_k"):
        return permute_rows(matrix, base.n_head_kv)
    return matrix


def oriented_b(pair: LoraPair, base: BaseModelInfo, alpha: float) -> np.ndarray:
    """``B`` as llama.cpp needs it: peft's per-module scale folded in where it differs
    from ``alpha / rank`` (rsLoRA, ``alpha_pattern``), rows in the base's order."""
    import numpy as np

    b = pair.b.astype(np.float32)
    fold = pair.scale * pair.rank / alpha
    if abs(fold - 1.0) > 1e-9:
        b = b * np.float32(fold)
    return np.ascontiguousarray(in_base_order(b, pair.name, base))


def write_adapter_gguf(
    adapter: LoraAdapter,
    base: BaseModelInfo,
    out: str | Path,
    *,
    outtype: str = "f32",
    name: str | None = None,
) -> AdapterExport:
    """Write ``adapter`` as a GGUF LoRA for ``base``."""
    import gguf
    import numpy as np

    if outtype not in ADAPTER_OUTTYPES:
        raise ExportError(f"--outtype for an adapter is one of {', '.join(ADAPTER_OUTTYPES)}.")
    for pair in adapter.pairs.values():
        check_fits(pair, base)
    dtype = np.float16 if outtype == "f16" else np.float32
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    alpha = adapter.alpha
    writer = gguf.GGUFWriter(tmp, base.arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    writer.add_name(name or f"THAU LoRA ({adapter.path.name})")
    file_type = gguf.LlamaFileType.MOSTLY_F16 if outtype == "f16" else gguf.LlamaFileType.ALL_F32
    writer.add_file_type(file_type)
    for pair in adapter.pairs.values():
        a = np.ascontiguousarray(pair.a, dtype=dtype)
        b = oriented_b(pair, base, alpha).astype(dtype)
        writer.add_tensor(f"{pair.name}.weight.lora_a", a)
        writer.add_tensor(f"{pair.name}.weight.lora_b", b)
    size = finish(writer, tmp, out)
    return AdapterExport(
        path=out, arch=base.arch, alpha=alpha, tensors=2 * len(adapter.pairs), bytes=size
    )


def export_adapter(
    adapter_dir: str | Path,
    base_gguf: str | Path,
    out: str | Path,
    *,
    outtype: str = "f32",
) -> AdapterExport:
    """``thau-export adapter``: peft folder + base GGUF -> GGUF LoRA at ``out``."""
    adapter = load_adapter(adapter_dir)
    base = base_info(open_gguf(base_gguf))
    return write_adapter_gguf(adapter, base, out, outtype=outtype)
