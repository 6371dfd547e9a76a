"""Errors that say what was expected, what was found, and what to do about it.

The CLI turns every ``BrainEdgeError`` into a one-line message and a non-zero exit instead of a
traceback; anything else is a bug.
"""


class BrainEdgeError(Exception):
    """Base class for errors a user can act on."""


class ConfigError(BrainEdgeError, ValueError):
    """A configuration value is out of range or inconsistent."""


class DatasetError(BrainEdgeError):
    """A dataset folder is missing, empty, or not laid out one folder per class."""


class ImageDecodeError(BrainEdgeError):
    """A file is not a readable image (corrupt, truncated, zero bytes or another format)."""


class WeightsUnavailableError(BrainEdgeError):
    """Pre-trained weights were asked for but cannot be obtained here."""


class RunDirError(BrainEdgeError):
    """A run folder is incomplete, belongs to a different configuration, or is already done."""


class ArtifactIntegrityError(BrainEdgeError):
    """A file's sha256 differs from its manifest: truncated, edited or half-written."""


class MissingDependencyError(BrainEdgeError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def requires(module: str, extra: str):
    """Import ``module`` or raise an error naming the pip extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module} is not installed; install it with: pip install 'brainedge[{extra}]'"
        ) from exc


class ConversionError(BrainEdgeError):
    """A model could not be converted, pruned or quantized into an artifact."""


class CalibrationError(BrainEdgeError):
    """The calibration set for int8 quantization is empty or too small."""


class ModelLoadError(BrainEdgeError):
    """An artifact cannot be loaded by its runtime (truncated, wrong format, unsupported)."""


class FailedGateError(ModelLoadError):
    """An artifact failed its parity gate (optimize) and serving it was not explicitly allowed."""


class UnknownBackendError(BrainEdgeError, ValueError):
    """A runtime backend name that BrainEdge does not know."""


class ShapeMismatchError(BrainEdgeError, ValueError):
    """An input batch does not fit the model: wrong rank, size, channels, dtype or non-finite."""
