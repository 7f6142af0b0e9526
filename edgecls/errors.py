"""Error hierarchy. Every error a user can cause is an EdgeclsError with a one-line message
that says what was wrong and what to do; the CLI prints it without a traceback."""


class EdgeclsError(Exception):
    """Base class of every error edgecls raises on purpose."""


class ConfigError(EdgeclsError, ValueError):
    """An option or argument is invalid."""


class DataError(EdgeclsError):
    """A dataset or image cannot be read or is unusable."""


class ModelError(EdgeclsError):
    """A model cannot be built, loaded or used."""


class DependencyError(EdgeclsError, ImportError):
    """An optional dependency is missing."""


class ExportError(EdgeclsError):
    """A conversion or export step failed."""


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C, SIGTERM or SIGHUP; the message says what was kept and how to go on."""

    def __init__(self, message: str = "", signum: int | None = None):
        super().__init__(message)
        self.message = message
        self.signum = signum


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (or its class name), for one-line errors that wrap
    a third-party library's multi-line message."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else exc.__class__.__name__
