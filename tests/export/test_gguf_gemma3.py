"""GGUF adapter and merged exports on a tiny random Gemma 3 model: llama.cpp (through
llama-cpp-python) must compute what transformers + peft compute, position by position,
and the export's own GGUF reader must rebuild the transformers model."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from tests.export.tiny_gemma3 import (
    HEAD_DIM,
    HEADS,
    KV_HEADS,
    LAYERS,
    VOCAB,
    tiny_gemma3,
    write_gguf_base,
)
from tests.export.tiny_llama import (
    CPP_NAMES,
    Tiny,
    agreement,
    build_tiny,
    cpp_logits,
    hf_logits,
    load_cpp,
)
from thau.export.fidelity import chat_ids, compare, compare_merged, hf_model_from_gguf
from thau.export.gguf_adapter import export_adapter
from thau.export.gguf_file import GGUFFile
from thau.export.gguf_merge import export_merged_gguf
from thau.prompt_format import CHATML, GEMMA, template_for

CHAT = [
    {"role": "system", "content": "You are THAU."},
    {"role": "user", "content": "the rain in"},
    {"role": "assistant", "content": "the rain"},
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    folder = tmp_path_factory.mktemp("tiny-gemma3")
    chat = b"<start_of_turn>user\nthe rain in<end_of_turn>\n"
    return build_tiny(folder, tiny_gemma3, write_gguf_base, VOCAB, chat)


def test_base_layout_is_llama_cpp_s(tiny: Tiny, tmp_path: Path) -> None:
    """llama.cpp computes on our gemma3 base what transformers computes, across the
    sliding-window layers and the global one; the same base without the +1 on the
    norms does not."""
    model = tiny_gemma3()
    assert model.config.layer_types[-1] == "full_attention"
    assert len(tiny.sequences[0]) > 4 * model.config.sliding_window
    reference = [hf_logits(model, s) for s in tiny.sequences]
    share, gap = agreement([cpp_logits(load_cpp(tiny.base), s) for s in tiny.sequences], reference)
    assert share == 1.0 and gap < 0.05
    unshifted = write_gguf_base(model, tmp_path / "unshifted.gguf", norm_shift=0.0)
    wrong_share, _ = agreement(
        [cpp_logits(load_cpp(unshifted), s) for s in tiny.sequences], reference
    )
    assert wrong_share < 0.5


def test_tokenizer_loads_with_gemma_s_specials(tiny: Tiny) -> None:
    llm = load_cpp(tiny.base)
    ids = llm.tokenize(b"<start_of_turn>user\nthe rain in<end_of_turn>\n", special=True)
    assert ids[:2] == [2, 4]  # <bos>, then <start_of_turn> as one control token
    assert 5 in ids and llm.detokenize(ids[2:]).decode() == "user\nthe rain in\n"
    assert chat_ids(llm, CHAT, GEMMA)[0] == 2
    assert chat_ids(llm, CHAT, CHATML)[0] != 2


def test_adapter_file_follows_llama_cpp_s_convention(tiny: Tiny) -> None:
    reader = gguf.GGUFReader(tiny.adapter)
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert fields["general.type"] == "adapter"
    assert fields["adapter.type"] == "lora"
    assert fields["adapter.lora.alpha"] == 8.0
    assert fields["general.architecture"] == "gemma3"
    shapes = {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors}  # ggml ne order
    base = GGUFFile(tiny.base)
    expected = {}
    for layer in range(LAYERS):
        for name in CPP_NAMES:
            out_features, in_features = base.tensor(f"blk.{layer}.{name}.weight").shape
            expected[f"blk.{layer}.{name}.weight.lora_a"] = (in_features, 4)
            expected[f"blk.{layer}.{name}.weight.lora_b"] = (4, out_features)
    assert shapes == expected
    assert expected["blk.0.attn_q.weight.lora_b"] == (4, HEADS * HEAD_DIM)
    assert expected["blk.0.attn_k.weight.lora_b"] == (4, KV_HEADS * HEAD_DIM)


def test_adapter_in_llama_cpp_matches_peft(tiny: Tiny) -> None:
    """The tiny Gemma mostly predicts its input token again, by a wide margin, so the
    adapter flips only some top-1 tokens; its logits move far more than llama.cpp's
    rounding, which is what keeps the 1.0 below clear of near-ties."""
    share, gap = agreement(tiny.cpp, tiny.hf)
    assert share == 1.0 and gap < 0.05
    base_llm = load_cpp(tiny.base)
    base_share, base_gap = agreement([cpp_logits(base_llm, s) for s in tiny.sequences], tiny.hf)
    assert base_share < 0.95 and base_gap > 100 * gap  # the adapter really changes the model


def test_with_the_llama_qk_permutation_llama_cpp_disagrees(
    tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gemma3 keeps HF's Q/K row order in llama.cpp: permuting B like llama's breaks it."""
    monkeypatch.setattr("thau.export.gguf_base.PERMUTED_ARCHS", frozenset({"llama", "gemma3"}))
    wrong = export_adapter(tiny.adapter_dir, tiny.base, tmp_path / "wrong.gguf").path
    llm = load_cpp(tiny.base, wrong)
    _, right_gap = agreement(tiny.cpp, tiny.hf)
    _, wrong_gap = agreement([cpp_logits(llm, s) for s in tiny.sequences], tiny.hf)
    assert wrong_gap > 10 * right_gap


def test_merged_gguf_agrees_with_base_plus_adapter(tiny: Tiny, tmp_path: Path) -> None:
    merged = export_merged_gguf(tiny.adapter_dir, tiny.base, tmp_path / "m.gguf", outtype="f32")
    assert merged.merged_tensors == LAYERS * len(CPP_NAMES)
    share, gap = agreement([cpp_logits(load_cpp(merged.path), s) for s in tiny.sequences], tiny.cpp)
    assert share == 1.0 and gap < 0.02
    base, out = GGUFFile(tiny.base), GGUFFile(merged.path)
    assert out.get("general.architecture") == "gemma3"
    for key in base.fields:
        if key.startswith(("tokenizer.", "gemma3.")):
            assert out.get(key) == base.get(key), key
    figures = compare_merged(tiny.base, tiny.adapter, merged.path, [CHAT], template=GEMMA)
    assert figures["top1_agreement"] == 1.0 and figures["max_abs_logit_diff"] < 0.02


def test_compare_renders_gemma_turns(tiny: Tiny) -> None:
    """The fidelity comparison on a gemma3 base, in Gemma's template with its BOS."""
    assert template_for(GGUFFile(tiny.base).get("general.architecture")) is GEMMA
    figures = compare(tiny.base, tiny.adapter, tiny.peft_model, [CHAT], template=GEMMA)
    assert figures["positions"] == len(chat_ids(load_cpp(tiny.base), CHAT, GEMMA))
    assert figures["top1_agreement"] == 1.0 and figures["max_abs_logit_diff"] < 0.05
    assert figures["base_vs_base_top1_agreement"] == 1.0
    assert figures["base_only_top1_agreement"] < figures["top1_agreement"]


def test_hf_model_from_gguf_rebuilds_gemma3(tiny: Tiny) -> None:
    """The GGUF read back as transformers' Gemma 3: config, weights (norms minus 1) and
    logits of the original model."""
    original = tiny_gemma3()
    rebuilt = hf_model_from_gguf(tiny.base)
    assert type(rebuilt).__name__ == "Gemma3ForCausalLM"
    for key in ("layer_types", "sliding_window", "head_dim", "query_pre_attn_scalar"):
        assert getattr(rebuilt.config, key) == getattr(original.config, key), key
    for layer_type in ("full_attention", "sliding_attention"):
        got = rebuilt.config.rope_parameters[layer_type]["rope_theta"]
        assert got == original.config.rope_parameters[layer_type]["rope_theta"], layer_type
    weights = rebuilt.state_dict()
    for name, weight in original.state_dict().items():
        np.testing.assert_allclose(weights[name].numpy(), weight.numpy(), atol=1e-6, err_msg=name)
    for tokens in tiny.sequences:
        np.testing.assert_allclose(
            hf_logits(rebuilt, tokens), hf_logits(original, tokens), atol=1e-4
        )
