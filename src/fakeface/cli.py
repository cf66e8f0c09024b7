"""Entry-point error reporting: one `fakeface: error: ...` line for the errors a user can fix.

Light on purpose (stdlib at import time): any entry point may use it.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and a value that would."""


def _is_user_error(err: BaseException) -> bool:
    """True for errors the user fixes by changing a command line, a config or a file."""
    # Imported when an error is being reported, so that importing this module stays cheap.
    from hydra.errors import InstantiationException
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from fakeface.data.index import DatasetError
    from fakeface.modelfile import ModelFileError
    from fakeface.preprocess import BadImageError

    if isinstance(err, InstantiationException):
        # Building an object from the config failed: a wrong value, argument or _target_ is the
        # user's to fix; anything else (AttributeError, ...) is a bug and keeps its traceback.
        mistakes = (ValueError, TypeError, LookupError, ImportError, MisconfigurationException)
        return err.__cause__ is None or isinstance(err.__cause__, mistakes)
    user_errors = (
        ConfigError,
        DatasetError,
        BadImageError,
        ModelFileError,
        MisconfigurationException,
    )
    return isinstance(err, (*user_errors, FileNotFoundError, PermissionError))


def one_line(err: BaseException) -> str:
    """The message of `err` on one line, unwrapped from Hydra and DataLoader-worker wrappers."""
    from hydra.errors import InstantiationException

    text = str(err)
    if isinstance(err, InstantiationException) and err.__cause__ is not None:
        # "Error in call to target 'X':\nValueError('...')\nfull_key: data" -> the cause + the key
        key = re.search(r"full_key: (\S+)", text)
        text = f"{err.__cause__}" + (f" (building {key.group(1)} from the config)" if key else "")
    elif "Original Traceback" in text:
        # A DataLoader worker's exception arrives with the worker's traceback in its message;
        # its last line is "module.ErrorType: message".
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split())


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Print user-fixable errors as one line and exit 1; HYDRA_FULL_ERROR=1 keeps the traceback."""
    try:
        yield
    except Exception as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or not _is_user_error(err):
            raise
        print(f"fakeface: error: {one_line(err)}", file=sys.stderr)
        raise SystemExit(1) from None
