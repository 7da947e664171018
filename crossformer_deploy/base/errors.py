"""What a user can get wrong, one type each; the CLI prints ``str(error)`` as one line and exits 2."""
from __future__ import annotations


class CrossFormerError(Exception):
    """Base of every error caused by the user's input (never by a bug)."""


class InputSizeError(CrossFormerError, ValueError):
    """An image size the model cannot take (not a multiple of 32, outside an engine profile...)."""


class CheckpointError(CrossFormerError):
    """A checkpoint that is not a CrossFormer, is another variant, or cannot be read safely."""


class ModelFileError(CrossFormerError):
    """A model file (ONNX, engine) that is missing, truncated, or of the wrong kind."""


class ImageError(CrossFormerError):
    """An input image that is missing or cannot be decoded."""


class UnreadableFileError(CrossFormerError, OSError):
    """An input file that is missing, a directory, or not readable (still an OSError for callers that
    catch those)."""


class UsageError(CrossFormerError):
    """Command-line arguments that do not fit together."""


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (or its type name): what a one-line error can quote."""
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:limit]


def os_reason(e: OSError) -> str:
    """Why a file could not be read, in a few words a one-line error can end with."""
    if isinstance(e, FileNotFoundError):
        return "no such file"
    if isinstance(e, IsADirectoryError):
        return "it is a directory, not a file"
    if isinstance(e, PermissionError):
        return "permission denied"
    return e.strerror or first_line(e)
