"""Where generated images live: PNG files with their parameters inside, plus JSON sidecars."""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from thau.vision.errors import ImageNotFound

IMAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,120}\.png$")
SLUG_LENGTH = 40


def slugify(text: str, *, length: int = SLUG_LENGTH) -> str:
    """Lower-case ASCII words joined by ``-`` (accents dropped); ``image`` when nothing is left."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:length].rstrip("-") or "image"


def a1111_parameters(meta: dict[str, Any]) -> str:
    """The parameters in AUTOMATIC1111's text layout, which many image viewers read."""
    lines = [meta["prompt"]]
    if meta.get("negative_prompt"):
        lines.append(f"Negative prompt: {meta['negative_prompt']}")
    lines.append(
        f"Steps: {meta['num_inference_steps']}, Sampler: {meta['scheduler']}, "
        f"CFG scale: {meta['guidance_scale']}, Seed: {meta['seed']}, "
        f"Size: {meta['width']}x{meta['height']}, Model: {meta['model']}"
    )
    return "\n".join(lines)


@dataclass(frozen=True)
class StoredImage:
    name: str
    path: Path
    sidecar: Path


class ImageStore:
    """Saves images under one folder with unique ``YYYYmmdd_HHMMSS_<slug>.png`` names."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def save(self, image: Any, meta: dict[str, Any]) -> StoredImage:
        """Write ``image`` as PNG (``meta`` in text chunks) and ``meta`` as a JSON sidecar."""
        from PIL.PngImagePlugin import PngInfo

        self.directory.mkdir(parents=True, exist_ok=True)
        handle, path = self._reserve(
            f"{datetime.now().strftime('%Y%m%d_%H%M%S')}_{slugify(meta['prompt'])}"
        )
        meta = {**meta, "image": path.name}
        info = PngInfo()
        info.add_text("parameters", a1111_parameters(meta))
        info.add_itxt("thau", json.dumps(meta, ensure_ascii=False))
        with handle:
            image.save(handle, format="PNG", pnginfo=info)
        sidecar = path.with_suffix(".json")
        sidecar.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", "utf-8")
        return StoredImage(name=path.name, path=path, sidecar=sidecar)

    def _reserve(self, stem: str) -> tuple[Any, Path]:
        """Create the file exclusively, adding ``-2``, ``-3``... until the name is free."""
        for attempt in range(1, 10_000):
            path = self.directory / (f"{stem}.png" if attempt == 1 else f"{stem}-{attempt}.png")
            try:
                return path.open("xb"), path
            except FileExistsError:
                continue
        raise RuntimeError(f"no free image name for {stem} in {self.directory}")

    def path_for(self, name: str) -> Path:
        """The stored file called ``name``; anything but a plain image name is not found."""
        if not IMAGE_NAME.fullmatch(name):
            raise ImageNotFound(f"no image named {name!r}")
        path = (self.directory / name).resolve()
        if path.parent != self.directory.resolve() or not path.is_file():
            raise ImageNotFound(f"no image named {name!r}")
        return path

    def count(self) -> int:
        if not self.directory.is_dir():
            return 0
        return sum(1 for _ in self.directory.glob("*.png"))
