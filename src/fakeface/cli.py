"""What every entry point shares: Hydra on the package's configs, user errors printed as one line.

Only entry points (the modules run with `python -m`) import this; library code raises
`fakeface.errors` classes and never formats them.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fakeface import conf_dir
from fakeface.errors import FakefaceError


def hydra_main(config_name: str) -> Callable[[Callable[[Any], Any]], Callable[[], Any]]:
    """`@hydra.main` on conf/<config_name>.yaml, with user errors printed as one line."""
    import hydra

    def decorate(task: Callable[[Any], Any]) -> Callable[[], Any]:
        @functools.wraps(task)
        def guarded(cfg: Any) -> Any:
            with one_line_errors():
                return task(cfg)

        return hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name=config_name)(
            guarded
        )

    return decorate


def _is_user_error(err: BaseException) -> bool:
    """True for errors the user fixes by changing a command line, a config or a file."""
    # Imported when an error is being reported, so that importing this module stays cheap.
    from hydra.errors import InstantiationException
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    if isinstance(err, InstantiationException):
        # Building an object from the config failed: a wrong value, argument or _target_ is the
        # user's to fix; anything else (AttributeError, ...) is a bug and keeps its traceback.
        mistakes = (ValueError, TypeError, LookupError, ImportError, MisconfigurationException)
        return err.__cause__ is None or isinstance(err.__cause__, mistakes)
    user_errors = (FakefaceError, MisconfigurationException, FileNotFoundError, PermissionError)
    return isinstance(err, user_errors)


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
