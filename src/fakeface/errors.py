"""The errors a user fixes: every one names the file or setting at fault and what to do.

Library modules raise these; `fakeface.cli` prints them as one line (exit 1). Standard-library
only, so any module can import it.
"""

from __future__ import annotations


class FakefaceError(Exception):
    """A problem the user fixes by changing a command line, a config or a file."""


class ConfigError(FakefaceError, ValueError):
    """A config value that cannot work; the message names the key and a value that would."""


class DatasetError(FakefaceError, ValueError):
    """A dataset folder or split file that is missing, empty, or laid out wrongly."""


class BadImageError(FakefaceError, ValueError):
    """An image file that cannot be decoded into RGB pixels."""


class ModelFileError(FakefaceError, RuntimeError):
    """A classifier or checkpoint file that is missing, unreadable, or not fakeface's."""


class SourceError(FakefaceError, RuntimeError):
    """A camera, video, window or output file the real-time loop cannot use."""


class DivergenceError(FakefaceError, RuntimeError):
    """Training produced a NaN or infinite loss; the message says which and how to resume."""


class DetectorError(FakefaceError, RuntimeError):
    """OpenCV lacks the Haar cascade machinery or its XML file."""
