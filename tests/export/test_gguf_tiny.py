"""GGUF adapter and merged exports on a tiny random llama model: llama.cpp (through
llama-cpp-python) must compute what transformers + peft compute, position by position."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from tests.export.tiny_llama import (
    CPP_NAMES,
    LAYERS,
    TARGETS,
    VOCAB,
    Tiny,
    add_lora,
    agreement,
    build_tiny,
    cpp_logits,
    hf_logits,
    load_cpp,
    tiny_llama,
    write_gguf_base,
)
from thau.export.cli import main
from thau.export.fidelity import hf_model_from_gguf
from thau.export.gguf_adapter import export_adapter
from thau.export.gguf_file import GGUFFile
from thau.export.gguf_merge import export_merged_gguf, export_merged_safetensors


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    folder = tmp_path_factory.mktemp("tiny")
    chat = b"<|im_start|>user\nthe rain in<|im_end|>\n"
    return build_tiny(folder, tiny_llama, write_gguf_base, VOCAB, chat)


def test_base_layout_is_llama_cpp_s(tiny: Tiny) -> None:
    """transformers' GGUF loader undoes llama.cpp's Q/K permutation: loading our base
    gives back the original weights exactly; llama.cpp computes the same logits."""
    import torch
    from transformers import AutoModelForCausalLM

    original = tiny_llama().state_dict()
    loaded = AutoModelForCausalLM.from_pretrained(
        str(tiny.folder), gguf_file=tiny.base.name, dtype=torch.float32
    ).state_dict()
    for name, weight in original.items():
        assert torch.equal(loaded[name], weight), name
    base_llm = load_cpp(tiny.base)
    model = tiny_llama()
    share, gap = agreement(
        [cpp_logits(base_llm, s) for s in tiny.sequences],
        [hf_logits(model, s) for s in tiny.sequences],
    )
    assert share == 1.0 and gap < 0.05


def test_hf_model_from_gguf_rebuilds_llama(tiny: Tiny) -> None:
    """The export's own GGUF reader (Q/K rows unpermuted) gives back the original model."""
    original = tiny_llama()
    rebuilt = hf_model_from_gguf(tiny.base)
    assert type(rebuilt).__name__ == "LlamaForCausalLM"
    weights = rebuilt.state_dict()
    for name, weight in original.state_dict().items():
        assert np.array_equal(weights[name].numpy(), weight.numpy()), name
    for tokens in tiny.sequences:
        np.testing.assert_allclose(
            hf_logits(rebuilt, tokens), hf_logits(original, tokens), atol=1e-5
        )


def test_adapter_file_follows_llama_cpp_s_convention(tiny: Tiny) -> None:
    reader = gguf.GGUFReader(tiny.adapter)
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert fields["general.type"] == "adapter"
    assert fields["adapter.type"] == "lora"
    assert fields["adapter.lora.alpha"] == 8.0
    assert fields["general.architecture"] == "llama"
    shapes = {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors}  # ggml ne order
    base = GGUFFile(tiny.base)
    expected = {}
    for layer in range(LAYERS):
        for name in CPP_NAMES:
            out_features, in_features = base.tensor(f"blk.{layer}.{name}.weight").shape
            expected[f"blk.{layer}.{name}.weight.lora_a"] = (in_features, 4)
            expected[f"blk.{layer}.{name}.weight.lora_b"] = (4, out_features)
    assert shapes == expected


def test_adapter_in_llama_cpp_matches_peft(tiny: Tiny) -> None:
    share, gap = agreement(tiny.cpp, tiny.hf)
    assert share >= 0.99 and gap < 0.05
    base_llm = load_cpp(tiny.base)
    base_share, _ = agreement([cpp_logits(base_llm, s) for s in tiny.sequences], tiny.hf)
    assert base_share < 0.5  # the adapter really changes the model


def test_without_the_qk_permutation_llama_cpp_disagrees(
    tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("thau.export.gguf_base.PERMUTED_ARCHS", frozenset())
    wrong = export_adapter(tiny.adapter_dir, tiny.base, tmp_path / "wrong.gguf").path
    llm = load_cpp(tiny.base, wrong)
    _, right_gap = agreement(tiny.cpp, tiny.hf)
    _, wrong_gap = agreement([cpp_logits(llm, s) for s in tiny.sequences], tiny.hf)
    assert wrong_gap > 10 * right_gap


def test_rslora_and_alpha_pattern_scales_are_kept(tiny: Tiny, tmp_path: Path) -> None:
    peft_model = add_lora(
        tiny_llama(), tmp_path / "adapter", use_rslora=True, alpha_pattern={"q_proj": 20.0}
    )
    out = export_adapter(tmp_path / "adapter", tiny.base, tmp_path / "lora.gguf")
    assert out.alpha == pytest.approx(16.0)  # alpha * sqrt(r): llama.cpp divides by r
    llm = load_cpp(tiny.base, out.path)
    share, gap = agreement(
        [cpp_logits(llm, s) for s in tiny.sequences],
        [hf_logits(peft_model, s) for s in tiny.sequences],
    )
    assert share >= 0.99 and gap < 0.05


def test_merged_gguf_agrees_with_base_plus_adapter(tiny: Tiny, tmp_path: Path) -> None:
    results = {}
    for outtype in ("f32", "f16", "q8_0"):
        merged = export_merged_gguf(
            tiny.adapter_dir, tiny.base, tmp_path / f"m-{outtype}.gguf", outtype=outtype
        )
        assert merged.merged_tensors == LAYERS * len(CPP_NAMES)
        llm = load_cpp(merged.path)
        results[outtype] = agreement([cpp_logits(llm, s) for s in tiny.sequences], tiny.cpp)
    assert results["f32"][0] >= 0.99 and results["f32"][1] < 0.02
    assert results["f16"][0] >= 0.98 and results["f16"][1] < 0.05
    # q8_0 also quantizes activations; measure it against the base converted alone
    quantized_base = export_merged_gguf(None, tiny.base, tmp_path / "q8.gguf", outtype="q8_0")
    llm = load_cpp(quantized_base.path, tiny.adapter)
    q8_share, q8_gap = agreement([cpp_logits(llm, s) for s in tiny.sequences], tiny.cpp)
    assert results["q8_0"][0] >= min(0.9, q8_share - 0.03)
    assert results["q8_0"][1] < 2 * q8_gap


def test_q8_0_is_byte_identical_to_llama_cpp_s_quantizer(tiny: Tiny, tmp_path: Path) -> None:
    import ctypes

    import llama_cpp

    f32 = export_merged_gguf(tiny.adapter_dir, tiny.base, tmp_path / "m.gguf", outtype="f32")
    ours = export_merged_gguf(None, f32.path, tmp_path / "ours.gguf", outtype="q8_0")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    theirs = tmp_path / "theirs.gguf"
    code = llama_cpp.llama_model_quantize(
        str(f32.path).encode(), str(theirs).encode(), ctypes.byref(params)
    )
    assert code == 0
    mine, reference = GGUFFile(ours.path), GGUFFile(theirs)
    assert sorted(t.name for t in mine.tensors) == sorted(t.name for t in reference.tensors)
    for tensor in mine.tensors:
        other = reference.tensor(tensor.name)
        assert tensor.type == other.type, tensor.name
        assert np.array_equal(mine.raw(tensor), reference.raw(other)), tensor.name


def test_merged_gguf_keeps_tokenizer_and_template(tiny: Tiny, tmp_path: Path) -> None:
    out = export_merged_gguf(tiny.adapter_dir, tiny.base, tmp_path / "m.gguf", outtype="q8_0")
    base, merged = GGUFFile(tiny.base), GGUFFile(out.path)
    for key in base.fields:
        if key.startswith(("tokenizer.", "llama.")):
            assert merged.get(key) == base.get(key), key
    assert merged.get("general.file_type") == gguf.LlamaFileType.MOSTLY_Q8_0
    kinds = {t.name: gguf.GGMLQuantizationType(t.type).name for t in merged.tensors}
    assert kinds["blk.0.attn_q.weight"] == "Q8_0" and kinds["output_norm.weight"] == "F32"


def test_merged_safetensors_matches_peft(tiny: Tiny, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = export_merged_safetensors(tiny.adapter_dir, tiny.base, tmp_path / "hf")
    names = {p.name for p in out.path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    model = AutoModelForCausalLM.from_pretrained(out.path)
    share, gap = agreement([hf_logits(model, s) for s in tiny.sequences], tiny.hf)
    assert share == 1.0 and gap < 1e-3
    tokenizer = AutoTokenizer.from_pretrained(out.path)
    text = "<|im_start|>user\nthe rain in<|im_end|>\n"
    assert tokenizer(text)["input_ids"] == tiny.sequences[-1]
    assert "<|im_start|>" in tokenizer.chat_template


def test_cli_adapter_and_its_errors(
    tiny: Tiny, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli.gguf"
    args = ["adapter", "--adapter", str(tiny.adapter_dir), "--base", str(tiny.base)]
    assert main([*args, "--out", str(out), "--outtype", "f16"]) == 0
    assert "Wrote" in capsys.readouterr().out
    assert GGUFFile(out).tensor("blk.0.attn_q.weight.lora_b").type == gguf.GGMLQuantizationType.F16
    missing = ["adapter", "--adapter", str(tmp_path), "--base", str(tiny.base)]
    assert main([*missing, "--out", str(out)]) == 1
    assert "is not a peft adapter folder" in capsys.readouterr().err
    other = write_gguf_base(tiny_llama(hidden=32), tmp_path / "other.gguf")
    assert main([*args[:3], "--base", str(other), "--out", str(out)]) == 1
    assert "does not fit" in capsys.readouterr().err


def test_gguf_lora_reads_back_into_peft_with_another_scale(tiny: Tiny) -> None:
    """Training can start from an exported (or the shipped) GGUF LoRA: read back into a
    peft model whose alpha differs, it computes what the original adapter computed."""
    from peft import LoraConfig, get_peft_model

    from thau.train.trainer import load_adapter_weights

    config = LoraConfig(r=4, lora_alpha=32.0, target_modules=TARGETS, lora_dropout=0.0)
    fresh = get_peft_model(tiny_llama(), config)
    load_adapter_weights(tiny.adapter, fresh)
    fresh.eval()
    for tokens, expected in zip(tiny.sequences, tiny.hf, strict=True):
        np.testing.assert_allclose(hf_logits(fresh, tokens), expected, atol=1e-4)


def test_reading_a_gguf_that_is_not_a_lora_is_a_clear_error(tiny: Tiny) -> None:
    from peft import LoraConfig, get_peft_model

    from thau.errors import ConfigError
    from thau.train.trainer import load_adapter_weights

    config = LoraConfig(r=4, lora_alpha=8.0, target_modules=TARGETS, lora_dropout=0.0)
    with pytest.raises(ConfigError, match="not a GGUF LoRA adapter"):
        load_adapter_weights(tiny.base, get_peft_model(tiny_llama(), config))
