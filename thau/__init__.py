"""THAU: a local tool-calling assistant for small models.

The parts install under this one namespace: ``thau.chat`` (the runtime), ``thau.tools``
(the registry and built-in tools), ``thau.train``, ``thau.export`` and ``thau.vision``.
The modules here (``errors``, ``paths``, ``settings``, ``prompt_format``, ``jsonl``,
``resources``, ``http_security``, which the servers share, and ``train_queue``
and ``train_service_files``, which the chat and the training service share) are the bottom
floor: every part may import them, and they import no part.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("thau")
except PackageNotFoundError:  # a bare source tree that was never installed
    __version__ = "0.0.0+unknown"
