"""THAU's image-generation server: FastAPI in front of a diffusers pipeline.

``create_app(settings, pipeline=None)`` builds the app; ``thau-vision serve`` runs it.
torch and diffusers are imported only when a model is loaded.
"""

from thau.vision.app import create_app
from thau.vision.settings import VisionSettings, load_settings

__all__ = ["VisionSettings", "create_app", "load_settings"]
