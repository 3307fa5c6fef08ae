"""Which adapter the embedded backend loads: the service's promoted version for its base,
else the shipped one; ``--adapter shipped|none|PATH``; a promotion is picked up at /clear.

The backends are real (``create_backend``); llama.cpp loads a model only on the first
message, which these tests never send.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from tests.scripted import make_registry
from tests.train.service.conftest import write_dataset
from tests.train.service.promoted import open_service, promote
from thau.chat import commands
from thau.chat.adapters import choose_adapter
from thau.chat.backends import create_backend
from thau.chat.backends.embedded import default_adapter_path, default_model_path
from thau.chat.config import load_settings
from thau.chat.repl import ChatRepl, PlainReader
from thau.errors import ModelNotFound
from thau.paths import data_dir
from thau.train.service import TrainingService

SHIPPED = default_adapter_path()


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    """A stand-in adapter file: the choice only needs it to exist (llama.cpp never runs)."""
    path = tmp_path / "trained.gguf"
    path.write_bytes(b"GGUF")
    return path


@pytest.fixture
def service(tmp_path: Path, gguf: Path) -> TrainingService:
    svc = open_service(write_dataset(tmp_path / "dataset"), gguf)
    yield svc
    svc.close()


def test_without_a_service_the_shipped_adapter() -> None:
    assert SHIPPED is not None
    choice = choose_adapter(None, None, data_dir())
    assert (choice.path, choice.source) == (SHIPPED, "shipped")
    assert choice.label == "thau-135m-lora.gguf (shipped)"
    other = choose_adapter(None, Path("/models/other.gguf"), data_dir())
    assert (other.path, other.source, other.label) == (None, "none", "none")


def test_a_service_without_versions_keeps_the_shipped_adapter(service: TrainingService) -> None:
    assert choose_adapter(None, None, data_dir()).path == SHIPPED


def test_the_promoted_version_wins_for_its_base(service: TrainingService) -> None:
    version = promote(service)
    expected = service.version_folder(version) / "adapter.gguf"
    choice = choose_adapter(None, None, data_dir())
    assert (choice.path, choice.source, choice.version) == (expected, "promoted", "thau-135m-v1")
    assert choice.promoted_at == version["created"]
    day, time = version["created"][:16].split("T")
    assert choice.label == f"thau-135m-v1 (promoted {day} {time} UTC)"
    # the same base named by its path; another base never gets it
    assert choose_adapter(None, default_model_path(), data_dir()).path == expected
    assert choose_adapter(None, Path("/models/qwen.gguf"), data_dir()).path is None
    # what the person asks for wins
    assert choose_adapter("shipped", None, data_dir()).path == SHIPPED
    assert choose_adapter("none", None, data_dir()).path is None
    assert choose_adapter("~/mine.gguf", None, data_dir()).path == Path.home() / "mine.gguf"


def test_a_service_for_another_base_is_left_alone(tmp_path: Path, gguf: Path) -> None:
    svc = open_service(write_dataset(tmp_path / "dataset"), gguf, base_gguf=str(tmp_path / "b"))
    promote(svc)
    svc.close()
    assert choose_adapter(None, None, data_dir()).path == SHIPPED
    (tmp_path / "b").write_bytes(b"GGUF")  # a chat on the service's own base gets it
    assert choose_adapter(None, tmp_path / "b", data_dir()).source == "promoted"


def test_a_version_without_gguf_or_broken_files_fall_back_with_a_reason(tmp_path: Path) -> None:
    svc = open_service(write_dataset(tmp_path / "dataset"), None)
    promote(svc)
    svc.close()
    choice = choose_adapter(None, None, data_dir())
    assert choice.path == SHIPPED and "thau-135m-v1 has no GGUF adapter" in choice.note
    note = create_backend(load_settings(backend="embedded", model="thau-135m")).note
    assert "not the promoted version: thau-135m-v1 has no GGUF adapter" in note

    for broken in ("{not json", "[]", '{"current": 1, "versions": [{"number": 1}]}'):
        svc.paths.state.write_text(broken, "utf-8")
        choice = choose_adapter(None, None, data_dir())
        assert choice.path == SHIPPED and "is unreadable" in choice.note, broken


def test_forcing_the_shipped_adapter_where_none_ships(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("thau.chat.adapters.default_adapter_path", lambda: None)
    with pytest.raises(ModelNotFound, match="No adapter ships"):
        choose_adapter("shipped", None, data_dir())


def test_the_backend_says_which_adapter(service: TrainingService) -> None:
    note = create_backend(load_settings(backend="embedded", model="thau-135m")).note
    assert note.endswith("adapter: thau-135m-lora.gguf (shipped).")
    version = promote(service)
    selection = create_backend(load_settings(backend="embedded", model="thau-135m"))
    assert "SmolLM2" in selection.note and ", adapter: thau-135m-v1 (promoted 20" in selection.note
    assert selection.backend.adapter_path == service.version_folder(version) / "adapter.gguf"
    forced = create_backend(load_settings(backend="embedded", model="thau-135m", adapter="shipped"))
    assert forced.backend.adapter_path == SHIPPED
    base = create_backend(load_settings(backend="embedded", model="thau-135m", adapter="none"))
    assert base.backend.adapter_path is None and "adapter" not in base.note


def test_a_promotion_is_picked_up_at_clear_not_before(service: TrainingService) -> None:
    console = Console(record=True, width=400, file=io.StringIO())
    settings = load_settings(backend="embedded", model="thau-135m")
    repl = ChatRepl(settings, console, PlainReader(), registry=make_registry())
    assert repl.connect()
    assert repl.session is not None
    first = repl.session
    assert first.selection.backend.adapter_path == SHIPPED

    version = promote(service)
    commands.dispatch(repl, "/model")  # the conversation goes on with the adapter it has
    assert repl.session is first
    assert "adapter: thau-135m-lora.gguf (shipped)" in console.export_text()

    commands.dispatch(repl, "/clear")
    assert repl.session is not first
    promoted = service.version_folder(version) / "adapter.gguf"
    assert repl.session.selection.backend.adapter_path == promoted
    commands.dispatch(repl, "/model")
    shown = console.export_text()
    assert "adapter: thau-135m-v1 (promoted" in shown and str(promoted) in shown

    again = repl.session
    commands.dispatch(repl, "/clear")  # nothing new: the loaded backend stays
    assert repl.session is again


def test_forced_adapters_ignore_promotions(service: TrainingService) -> None:
    console = Console(file=io.StringIO())
    settings = load_settings(backend="embedded", model="thau-135m", adapter="shipped")
    repl = ChatRepl(settings, console, PlainReader(), registry=make_registry())
    assert repl.connect()
    first = repl.session
    promote(service)
    commands.dispatch(repl, "/clear")
    assert repl.session is first
    assert json.loads(service.paths.state.read_text("utf-8"))["current"] == 1


def test_telling_bases_apart_never_assembles_gemma(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Looking for the adapter of another GGUF compares paths only: the 253 MB Gemma base
    is not assembled (nor hashed) on the way."""
    other = tmp_path / "other.gguf"
    other.write_bytes(b"GGUF")
    models = tmp_path / "models"
    monkeypatch.setattr("thau.base_models.models_dir", lambda: models)
    assert choose_adapter(None, other, data_dir(), shipped=True).path is None
    with pytest.raises(ModelNotFound, match="No adapter ships for this base"):
        choose_adapter("shipped", other, data_dir())
    assert not models.exists()
