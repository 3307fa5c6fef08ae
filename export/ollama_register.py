"""Create a THAU model in Ollama: upload the GGUF adapter as a blob, then
``/api/create`` with ``from``, ``adapters``, ``system``, ``template`` and
``parameters`` (the same values the rendered Modelfile holds).

Each registration takes the next version ``thau-<size>-vN`` (see :mod:`export.versions`)
and points the plain name (``thau-135m``, what ``thau-chat`` asks for) at it. When no
server answers, the Modelfile is written to the data dir and the exact
``ollama create`` command is returned instead.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thau.export.errors import ExportError, OllamaCreateFailed, OllamaUnreachable
from thau.export.modelfile import build_modelfile, ollama_base, preset
from thau.export.versions import ModelVersion, VersionRegistry

DEFAULT_HOST = "http://localhost:11434"


@dataclass
class Registration:
    """The outcome of :func:`register`."""

    version: ModelVersion
    created: bool  # False: no server answered; run ``command``
    modelfile: Path
    command: str
    statuses: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)


def default_host() -> str:
    """``$OLLAMA_HOST`` (with a scheme) or Ollama's default address."""
    host = os.environ.get("OLLAMA_HOST") or DEFAULT_HOST
    return host if "://" in host else f"http://{host}"


def file_digest(path: Path) -> str:
    """``sha256:<hex>`` of a file, as Ollama names blobs."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def server_answers(host: str, timeout: float = 3.0) -> bool:
    """True when an Ollama server answers ``GET /api/version`` at ``host``."""
    import httpx

    try:
        return httpx.get(f"{host}/api/version", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def upload_blob(host: str, path: Path, timeout: float = 600.0) -> str:
    """``HEAD /api/blobs/<digest>``; ``POST`` the file when the server lacks it."""
    import httpx

    digest = file_digest(path)
    url = f"{host}/api/blobs/{digest}"
    try:
        if httpx.head(url, timeout=timeout).status_code == 200:
            return digest
        with path.open("rb") as handle:
            answer = httpx.post(url, content=handle, timeout=timeout)
    except httpx.HTTPError as exc:
        raise OllamaUnreachable(f"Ollama at {host} stopped answering: {exc}") from exc
    if answer.status_code not in (200, 201):
        raise OllamaCreateFailed(
            f"Ollama at {host} refused the blob {path.name} "
            f"(HTTP {answer.status_code}: {answer.text.strip()[:200]})."
        )
    return digest


def _create(client: Any, on_status: Callable[[str], None], **request: Any) -> list[str]:
    import ollama

    statuses = []
    try:
        for progress in client.create(stream=True, **request):
            status = progress.status or ""
            statuses.append(status)
            on_status(status)
    except ollama.ResponseError as exc:
        raise OllamaCreateFailed(
            f"Ollama could not create {request['model']}: {exc.error}. Check that the base "
            f"is pulled (`ollama pull {request.get('from_', '')}`) and the adapter fits it."
        ) from exc
    if not statuses or statuses[-1] != "success":
        raise OllamaCreateFailed(f"Ollama did not finish creating {request['model']}: {statuses}")
    return statuses


def register(
    name: str = "thau-135m",
    *,
    adapter: Path | None = None,
    from_: str | None = None,
    host: str | None = None,
    metrics: dict[str, Any] | None = None,
    alias: bool = True,
    registry: VersionRegistry | None = None,
    on_status: Callable[[str], None] = lambda status: None,
) -> Registration:
    """Register the next version of preset ``name`` with the Ollama server at ``host``."""
    import ollama

    from thau.paths import data_dir

    chosen = preset(name)
    host = (host or default_host()).rstrip("/")
    adapter = Path(adapter) if adapter else chosen.adapter_file
    if not adapter.is_file():
        raise ExportError(
            f"The adapter {adapter} does not exist. Make it with `thau-export adapter "
            f"--adapter <trainer out>/adapter --out {adapter}`."
        )
    adapter = adapter.resolve()
    base = from_ or ollama_base(chosen)
    base_file = Path(base) if base.endswith(".gguf") else None  # a packaged base's GGUF
    registry = registry or VersionRegistry()
    answers = server_answers(host)
    version = registry.record(
        chosen.size,
        base=base,
        adapter=str(adapter),
        adapter_sha256=file_digest(adapter).removeprefix("sha256:"),
        metrics=dict(metrics or {}),
    )
    modelfile = build_modelfile(chosen.name, adapter=adapter, from_=base)
    path = data_dir() / "modelfiles" / f"{version.name}.Modelfile"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(modelfile.render(), encoding="utf-8")
    command = f"ollama create {version.name} -f {shlex.quote(str(path))}"
    if alias:
        command += f" && ollama cp {version.name} {chosen.name}"
    if not answers:
        return Registration(version=version, created=False, modelfile=path, command=command)
    digest = upload_blob(host, adapter)
    client = ollama.Client(host=host)
    source: dict[str, Any] = {"from_": base}
    if base_file is not None:  # the server gets the file itself, as `ollama create` sends it
        source = {"files": {base_file.name: upload_blob(host, base_file)}}
    statuses = _create(
        client,
        on_status,
        model=version.name,
        **source,
        adapters={adapter.name: digest},
        system=modelfile.system,
        template=modelfile.template,
        parameters=modelfile.parameters,
    )
    aliases = []
    if alias:
        _create(client, on_status, model=chosen.name, from_=version.name)
        aliases.append(chosen.name)
    version = registry.update(version.name, ollama_host=host)
    return Registration(
        version=version,
        created=True,
        modelfile=path,
        command=command,
        statuses=statuses,
        aliases=aliases,
    )
