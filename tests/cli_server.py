"""Run `python -m fakeface.<command>` command lines for the tests without paying the imports each time.

One server process imports every entry point once (torch, Lightning and Hydra take seconds), then
forks a child per command line. The child runs the module as `python -m` does (runpy, as
__main__, in the given folder and environment), with stdout and stderr in files, and exits with
the command's status: what a test sees is what a fresh `python -m` process gives.
"""

from __future__ import annotations

import contextlib
import json
import os
import runpy
import signal
import sys
import traceback

ENTRY_POINTS = (
    "fakeface.train", "fakeface.evaluate", "fakeface.predict", "fakeface.export",
    "fakeface.generate", "fakeface.realtime.__main__", "fakeface.bench.__main__",
    "fakeface.data.inspect", "fakeface.data.cache", "fakeface.data.synthetic",
)  # fmt: skip


def run_child(request: dict) -> None:
    """In the forked child: redirect the output, set the folder and environment, run, exit."""
    os.setsid()  # its own session, as a fresh process: the caller can kill it with what it started
    for fd, name in ((1, "stdout"), (2, "stderr")):
        os.dup2(os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    os.chdir(request["cwd"])
    if request["env"] is not None:
        os.environ.clear()
        os.environ.update(request["env"])
    # Ctrl-C as in a fresh interpreter, even when the tests run with SIGINT ignored (`... &`)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for name in request.get("missing", ()):  # as if not installed: `import name` fails
        sys.modules[name] = None
    module = request["module"]
    main = module if module.endswith("__main__") else None
    sys.modules.pop(main or module, None)  # else runpy warns that it was imported before
    sys.modules.pop(f"{module}.__main__", None)
    sys.argv = [module, *request["argv"]]
    sys.path[0] = request["cwd"]
    code = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def serve() -> None:
    """Answer each JSON request (one stdin line) with its child's pid, then its exit status."""
    for name in ENTRY_POINTS:
        # a module that fails to import fails its own commands, in the child, as python -m would
        with contextlib.suppress(Exception):
            __import__(name)
    # what every training command imports on first use: the TensorBoard writer, Hydra's plugins
    with contextlib.suppress(Exception):
        import torch.utils.tensorboard  # noqa: F401
        from hydra.core.plugins import Plugins

        Plugins.instance()
    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            run_child(request)
        print(pid, flush=True)  # the caller kills it on a timeout
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)


if __name__ == "__main__":
    serve()
