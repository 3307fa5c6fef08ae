"""Registering with Ollama (against a fake server that speaks /api/create and
/api/blobs) and the persistent, monotonic version list."""

from __future__ import annotations

import json
import multiprocessing
import socket
from collections.abc import Iterator
from pathlib import Path

import ollama
import pytest

from tests.export.fake_ollama_create import FakeOllamaCreate
from thau.export.cli import main
from thau.export.errors import OllamaCreateFailed
from thau.export.modelfile import default_system, go_template, parse_modelfile
from thau.export.ollama_register import file_digest, register
from thau.export.versions import VersionRegistry, scalar_metrics, versions_file


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server() -> Iterator[FakeOllamaCreate]:
    fake = FakeOllamaCreate().start()
    yield fake
    fake.stop()


@pytest.fixture
def adapter(tmp_path: Path) -> Path:
    path = tmp_path / "thau-135m-lora.gguf"
    path.write_bytes(b"GGUF" + bytes(range(256)) * 40)
    return path


def test_register_uploads_the_blob_and_creates_the_model(
    server: FakeOllamaCreate, adapter: Path
) -> None:
    metrics = {"decision_accuracy": 0.91, "n": 120}
    done = register("thau-135m", adapter=adapter, host=server.url, metrics=metrics)
    digest = file_digest(adapter)
    assert done.created and done.version.name == "thau-135m-v1"
    assert server.blobs[digest] == adapter.read_bytes()
    versioned, alias = server.created()
    assert versioned["model"] == "thau-135m-v1" and versioned["from"] == "smollm2:135m"
    assert versioned["adapters"] == {adapter.name: digest}
    assert versioned["system"] == default_system()
    assert versioned["template"] == go_template()
    assert versioned["parameters"]["stop"] == ["<|im_start|>", "<|im_end|>"]
    assert versioned["parameters"]["num_ctx"] == 4096
    assert alias == {"model": "thau-135m", "from": "thau-135m-v1", "stream": True}
    assert done.statuses[-1] == "success" and done.aliases == ["thau-135m"]
    assert set(server.models) == {"thau-135m-v1:latest", "thau-135m:latest"}
    stored = VersionRegistry().list()
    assert [v.name for v in stored] == ["thau-135m-v1"]
    assert stored[0].metrics == metrics and stored[0].ollama_host == server.url
    assert stored[0].adapter_sha256 == digest.removeprefix("sha256:")


def test_thau_270m_sends_its_gemma_base_as_a_file(server: FakeOllamaCreate, adapter: Path) -> None:
    """Ollama's gemma3:270m is the instruction-tuned model: thau-270m is created from the
    pretrained GGUF itself, uploaded as a blob, with Gemma's template and stops."""
    from thau.base_models import packaged_base_path
    from thau.prompt_format import GEMMA

    base = packaged_base_path("gemma3-270m")
    done = register("thau-270m", adapter=adapter, host=server.url)
    base_digest = file_digest(base)
    assert done.created and done.version.name == "thau-270m-v1"
    assert len(server.blobs[base_digest]) == base.stat().st_size
    versioned, _alias = server.created()
    assert "from" not in versioned
    assert versioned["files"] == {base.name: base_digest}
    assert versioned["adapters"] == {adapter.name: file_digest(adapter)}
    assert versioned["template"] == go_template(GEMMA)
    assert versioned["parameters"]["stop"] == ["<start_of_turn>", "<end_of_turn>"]
    assert VersionRegistry().list("270m")[0].base == str(base)


def test_second_registration_is_v2_and_reuses_the_blob(
    server: FakeOllamaCreate, adapter: Path
) -> None:
    register("thau-135m", adapter=adapter, host=server.url)
    done = register("thau-135m", adapter=adapter, host=server.url, alias=False)
    assert done.version.name == "thau-135m-v2" and done.aliases == []
    uploads = [r for r in server.requests if r[0] == "POST" and r[1].startswith("/api/blobs/")]
    heads = [r for r in server.requests if r[0] == "HEAD"]
    assert len(uploads) == 1 and len(heads) == 2


def test_missing_blob_is_a_400(server: FakeOllamaCreate) -> None:
    client = ollama.Client(host=server.url)
    with pytest.raises(ollama.ResponseError) as caught:
        client.create(model="x", from_="smollm2:135m", adapters={"a.gguf": "sha256:" + "0" * 64})
    assert caught.value.status_code == 400 and "missing blob" in caught.value.error


def test_unknown_base_fails_with_a_readable_error(server: FakeOllamaCreate, adapter: Path) -> None:
    with pytest.raises(OllamaCreateFailed, match=r"ollama pull qwen9:1b"):
        register("thau-135m", adapter=adapter, host=server.url, from_="qwen9:1b")


def test_without_a_server_the_command_is_printed(
    adapter: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    host = f"http://127.0.0.1:{free_port()}"
    code = main(["ollama", "--name", "thau-135m", "--host", host, "--adapter", str(adapter)])
    out = capsys.readouterr().out
    assert code == 0 and "No Ollama server answers" in out
    path = versions_file().parent / "modelfiles" / "thau-135m-v1.Modelfile"
    assert f"ollama create thau-135m-v1 -f {path} && ollama cp thau-135m-v1 thau-135m" in out
    parsed = parse_modelfile(path.read_text("utf-8"))
    assert parsed["adapter"] == str(adapter.resolve()) and parsed["from"] == "smollm2:135m"
    assert VersionRegistry().list()[0].ollama_host is None


def _record_many(path: str, size: str, count: int) -> list[int]:
    registry = VersionRegistry(Path(path))
    return [registry.record(size).number for _ in range(count)]


def test_versions_are_monotonic_under_concurrency(tmp_path: Path) -> None:
    path = tmp_path / "versions.json"
    context = multiprocessing.get_context("fork")
    with context.Pool(4) as pool:
        runs = pool.starmap(_record_many, [(str(path), "135m", 5)] * 4)
    numbers = sorted(n for run in runs for n in run)
    assert numbers == list(range(1, 21))
    for run in runs:
        assert run == sorted(run)
    registry = VersionRegistry(path)
    assert [v.number for v in registry.list("135m")] == list(range(1, 21))
    assert registry.record("360m").name == "thau-360m-v1"
    # a number is never reused, even when entries are removed by hand
    data = json.loads(path.read_text("utf-8"))
    data["versions"] = [v for v in data["versions"] if v["number"] < 5]
    path.write_text(json.dumps(data), "utf-8")
    assert registry.record("135m").name == "thau-135m-v21"
    assert not list(tmp_path.glob(".versions-*"))


def test_versions_command_lists_them(capsys: pytest.CaptureFixture[str]) -> None:
    registry = VersionRegistry()
    report = {"n": 40, "decision_accuracy": 0.875, "by_lang": {"es": {}}, "confusion": {}}
    registry.record("135m", metrics=scalar_metrics(report))
    registry.record("135m")
    assert main(["versions"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "CREATED", "OLLAMA", "METRICS"]
    assert lines[1].startswith("thau-135m-v1") and "n=40, decision_accuracy=0.875" in lines[1]
    assert lines[2].startswith("thau-135m-v2")
    assert main(["versions", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [v["name"] for v in listed] == ["thau-135m-v1", "thau-135m-v2"]
    assert listed[0]["metrics"] == {"n": 40, "decision_accuracy": 0.875}
