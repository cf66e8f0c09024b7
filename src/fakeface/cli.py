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


# `fakeface <command> [overrides]`: the entry points under one console script.
COMMANDS = {
    "predict": ("fakeface.predict", "classify photos (the released model unless classifier=...)"),
    "serve": ("fakeface.serve", "a local web page and JSON API that check photos"),
    "train": ("fakeface.train", "train the CNN classifier, the detector or the DCGAN"),
    "evaluate": ("fakeface.evaluate", "metrics, ROC, calibration and per-source report"),
    "export": ("fakeface.export", "a checkpoint -> TorchScript / ONNX / int8 classifier file"),
    "realtime": ("fakeface.realtime", "face detection + classification on a camera or video"),
    "generate": ("fakeface.generate", "fake faces from a trained DCGAN"),
    "inspect": ("fakeface.data.inspect", "index a dataset: balance, duplicates, bad files"),
    "cache": ("fakeface.data.cache", "decode a dataset once into a memmap"),
    "synthetic": ("fakeface.data.synthetic", "write the embedded demo dataset"),
    "bench": ("fakeface.bench", "speed report: data, training, export, real time, serve"),
}


def console(argv: list[str] | None = None) -> None:
    """The `fakeface` console script: run the named entry point with Hydra's overrides."""
    import runpy

    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        width = max(map(len, COMMANDS))
        lines = [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
        print(
            "usage: fakeface <command> [key=value ...]   (Hydra overrides; <command> --help shows "
            "its config)\n\ncommands:\n" + "\n".join(lines)
        )
        raise SystemExit(0 if args else 2)
    if args[0] not in COMMANDS:
        print(
            f"fakeface: error: unknown command {args[0]!r}; commands: {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        raise SystemExit(2)
    module = COMMANDS[args[0]][0]
    sys.argv = [f"fakeface {args[0]}", *args[1:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
