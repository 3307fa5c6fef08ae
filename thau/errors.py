"""Every error THAU raises on purpose. Messages say what to do next.

Catch ``ThauError`` for all of them, or a precise subclass.
"""

from __future__ import annotations


class ThauError(Exception):
    """Base class of every THAU error."""


class ConfigError(ThauError):
    """The configuration (file, environment or flags) is invalid."""


class BackendError(ThauError):
    """A model backend failed."""


class BackendUnavailable(BackendError):
    """The backend's server does not answer."""


class ModelNotFound(BackendError):
    """The backend answers but does not have the model."""


class BackendTimeout(BackendError):
    """The backend took too long to answer."""


class StreamInterrupted(BackendError):
    """The backend's stream broke off before the reply was complete."""


class ToolError(ThauError):
    """A tool could not run or failed while running."""


class UnknownTool(ToolError):
    """No tool of that name is registered."""


class ToolArgumentsInvalid(ToolError):
    """The arguments of a tool call do not validate against its model."""
