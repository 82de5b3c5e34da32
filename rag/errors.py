"""Errors a user can act on.

Every error names the problem and the fix, and carries a stable ``code`` that
wrappers (CLI exit messages, the Cog runner, the RunPod handler) pass through
unchanged. Causes are chained with ``raise ... from e``; tracebacks never reach
a wrapper's output.
"""

from __future__ import annotations


class RagError(Exception):
    """Base class. ``code`` is stable and machine-readable; ``str(e)`` is for people."""

    code = "rag_error"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class InputError(RagError):
    """A request or file the user gave is not acceptable (fix the input)."""

    code = "invalid_input"


class LoadError(RagError):
    """A source file could not be read into text."""

    code = "load_failed"


class NeedsOCRError(LoadError):
    """A PDF (or some of its pages) has no text layer."""

    code = "needs_ocr"


class ConfigError(RagError):
    """A setting or combination of settings is wrong (fix the environment / flags)."""

    code = "bad_config"


class IndexError_(RagError):
    """The index is missing, corrupted or built with other settings."""

    code = "index_error"


class ReindexRequired(IndexError_):
    code = "reindex_required"


class IndexBusy(IndexError_):
    code = "index_busy"


class ModelError(RagError):
    """A model, adapter or tokenizer could not be loaded or does not match."""

    code = "model_error"


class Cancelled(RagError):
    code = "cancelled"
