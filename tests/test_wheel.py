"""The wheel, installed (not editable) into a fresh venv outside the checkout, is a
working THAU: one import namespace, its data read as package data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return next(out.glob("thau-*.whl"))


@pytest.fixture(scope="module")
def fresh(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv with the wheel installed; its dependencies come from this venv's
    site-packages (added by a ``.pth`` line, so this venv's editable THAU stays out)."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(py), "install", "--quiet"]
    subprocess.run([*pip, "--no-deps", "--no-index", str(wheel)], check=True, timeout=300)
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    deps = [p for p in sys.path if p.endswith("site-packages")]  # this venv's, and theirs
    (Path(site) / "deps-from-dev-venv.pth").write_text("\n".join(deps) + "\n")
    return venv


def run(venv: Path, *argv: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        list(argv), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_the_wheel_installs_only_thau(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"thau"}
    for data in (
        "thau/datasets/eval/dev.jsonl",
        "thau/datasets/seeds/answers.yaml",
        "thau/datasets/tool_calling/train.jsonl",
        "thau/train/presets/smollm2-135m.yaml",
        "thau/modelfiles/thau-135m.Modelfile",
        "thau/chat/data/thau-135m-lora.gguf",
        "thau/train/presets/gemma3-270m.yaml",
        "thau/modelfiles/thau-270m.Modelfile",
        "thau/chat/data/thau-270m-lora.gguf",
        "thau/chat/data/thau-270m-lora.NOTICE",
    ):
        assert data in names, data
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[thau.tools]" in text and "code_execution = thau.tools.code_execution:tool" in text


def test_the_installed_commands_work_outside_the_checkout(fresh: Path, tmp_path: Path) -> None:
    py = str(fresh / "bin" / "python")
    generic = run(fresh, py, "-c", "import tools", cwd=tmp_path)
    assert generic.returncode != 0 and "No module named 'tools'" in generic.stderr
    where = run(
        fresh,
        py,
        "-c",
        "import thau.chat, thau.resources as r; print(thau.chat.__file__, r.datasets_dir())",
        cwd=tmp_path,
    )
    assert str(ROOT) not in where.stdout and str(fresh) in where.stdout, where.stdout

    helped = run(fresh, "thau-chat", "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "usage: thau-chat" in helped.stdout

    args = json.dumps({"code": "print(6 * 7)"})
    ran = run(
        fresh,
        "thau-chat",
        "--run-tool",
        "code_execution",
        "--args",
        args,
        "--yes",
        "--json",
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["result"]["stdout"] == "42\n"


def test_eval_runs_on_the_shipped_dev_set(fresh: Path, tmp_path: Path) -> None:
    done = run(fresh, "thau-train", "eval", "--limit", "3", "--json", "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["n"] == 3  # the shipped dev set, found in the installed package
