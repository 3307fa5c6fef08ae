"""A fake Ollama server for model creation, after Ollama's documented API (docs/api.md):

- ``GET /api/version`` -> ``{"version": ...}``.
- ``HEAD /api/blobs/:digest`` -> 200 when the blob exists, 404 otherwise.
- ``POST /api/blobs/:digest`` -> 201 when the body's SHA-256 is the digest, 400 otherwise.
- ``POST /api/create`` with ``model``, ``from``, ``files``, ``adapters``, ``template``,
  ``system``, ``parameters``, ``stream``: 400 ``{"error": ...}`` when a named blob was
  never uploaded or ``from`` is unknown; else status lines as NDJSON (one object with
  ``"stream": false``) ending in ``{"status": "success"}``.
- ``GET /api/tags`` lists the models it holds.
Model names without a tag mean ``:latest``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def tagged(name: str) -> str:
    """``name:latest`` unless ``name`` has a tag."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


@dataclass
class FakeOllamaCreate:
    """State of the fake server; ``url`` once started."""

    pulled: set[str] = field(default_factory=lambda: {"smollm2:135m", "smollm2:360m"})
    blobs: dict[str, bytes] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    url: str = ""

    def start(self) -> FakeOllamaCreate:
        state = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    return self.rfile.read(length)
                if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                    return b""
                chunks = []
                while size := int(self.rfile.readline().strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)

            def _send(self, status: int, body: bytes = b"") -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _json(self, status: int, value: Any) -> None:
                self._send(status, json.dumps(value).encode())

            def do_GET(self) -> None:
                state.requests.append(("GET", self.path, None))
                if self.path == "/api/version":
                    self._json(200, {"version": "0.12.0"})
                elif self.path == "/api/tags":
                    self._json(200, {"models": [{"name": n, "model": n} for n in state.models]})
                else:
                    self._json(404, {"error": "not found"})

            def do_HEAD(self) -> None:
                state.requests.append(("HEAD", self.path, None))
                digest = self.path.removeprefix("/api/blobs/")
                self._send(200 if digest in state.blobs else 404)

            def do_POST(self) -> None:
                body = self._body()
                if self.path.startswith("/api/blobs/"):
                    digest = self.path.removeprefix("/api/blobs/")
                    state.requests.append(("POST", self.path, len(body)))
                    if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
                        self._json(400, {"error": "digest mismatch"})
                        return
                    state.blobs[digest] = body
                    self._send(201)
                elif self.path == "/api/create":
                    request = json.loads(body or b"{}")
                    state.requests.append(("POST", self.path, request))
                    self._create(request)
                else:
                    self._json(404, {"error": "not found"})

            def _create(self, request: dict[str, Any]) -> None:
                name = request.get("model")
                if not name:
                    self._json(400, {"error": "model is required"})
                    return
                named = {**(request.get("files") or {}), **(request.get("adapters") or {})}
                for filename, digest in named.items():
                    if digest not in state.blobs:
                        self._json(400, {"error": f"missing blob {digest} for {filename}"})
                        return
                base = request.get("from")
                if not base and not request.get("files"):
                    self._json(400, {"error": "neither 'from' nor 'files' was specified"})
                    return
                if base and tagged(base) not in state.pulled | set(state.models):
                    self._json(400, {"error": f"model '{base}' not found"})
                    return
                lines = [{"status": "parsing modelfile"}]
                lines += [{"status": f"using existing layer {d}"} for d in named.values()]
                if request.get("template"):
                    lines.append({"status": "creating new layer sha256:template"})
                lines += [{"status": "writing manifest"}, {"status": "success"}]
                state.models[tagged(name)] = request
                if request.get("stream") is False:
                    self._json(200, lines[-1])
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for line in lines:
                    data = (json.dumps(line) + "\n").encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.write(b"0\r\n\r\n")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def created(self) -> list[dict[str, Any]]:
        """The bodies of every ``/api/create`` request, in order."""
        return [body for _method, path, body in self.requests if path == "/api/create"]
