"""Shared fixtures: a tiny 140k-layout folder made in the test (no downloads, no shared data)."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
MAX_WORKERS = 4  # each worker holds torch and a fork server: about 1 GiB of memory apiece


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (pyproject's addopts): one worker per core, at most MAX_WORKERS."""
    return max(1, min(CORES, MAX_WORKERS))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first: the workers then end together on short ones, not one of them idle
    while the other finishes a long test."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


# Each worker (and every process it starts) gets its share of the cores: torch's default, every
# core per process, has the workers' thread pools contend for the same cores and slows them all.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    os.environ.setdefault(
        "OMP_NUM_THREADS", str(max(1, CORES // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    )
    if "torch" in sys.modules:  # imported before this file by a plugin: the variable came late
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def quiet_trainer(accelerator: str = "cpu", **settings: Any) -> Any:
    """A one-device Lightning Trainer that writes nothing (no logger, checkpoints, progress bar
    or model summary), with `settings` on top."""
    import lightning as L

    quiet = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    return L.Trainer(
        accelerator=accelerator, devices=1, enable_model_summary=False, **(quiet | settings)
    )


def make_face_folder(
    root: Path, per_class: int = 6, size: int = 64, splits=("train", "valid", "test")
) -> Path:
    """{split}/{fake,real}/*.jpg with a learnable difference: fakes carry a checkerboard."""
    rng = np.random.default_rng(0)
    checker = (np.indices((size, size)).sum(0) % 2 * 60).astype(np.int16)[..., None]
    for split in splits:
        for name in ("fake", "real"):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                base = rng.integers(60, 190, (size, size, 3)).astype(np.int16)
                pixels = base + checker if name == "fake" else base
                image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
                image.save(folder / f"{i:03d}.jpg", quality=95)
    return root


@pytest.fixture
def face_folder(tmp_path: Path) -> Path:
    return make_face_folder(tmp_path / "faces")


LEARNED_SEED = 0  # test accuracy 0.96 / 0.96 / 1.00 with seeds 0 / 1 / 2 (chance: 0.5)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One small training run per session, shared by the tests that only read what it wrote:
    `experiment=cnn` for 2 full epochs on 12 images per class and split at 32 px, tested, with
    TensorBoard on and export off. Returns (run directory, the metrics train() returned)."""
    from fakeface.train import train

    tmp = tmp_path_factory.mktemp("trained")
    faces = make_face_folder(tmp / "faces", per_class=12, size=32)
    out = tmp / "run"
    cfg = compose("train", [
        "experiment=cnn", "debug=tiny", f"data.root={faces}", "data.image_size=32",
        "data.batch_size=8", "trainer.max_epochs=2", "trainer.limit_train_batches=1.0",
        "trainer.limit_val_batches=1.0", "trainer.limit_test_batches=1.0", f"seed={LEARNED_SEED}",
        f"paths.root_dir={tmp}", f"paths.output_dir={out}", "callbacks.progress_bar=null",
        "export=false",
    ])  # fmt: skip
    return out, train(cfg)


def compose(config_name: str, overrides: list[str]):
    """Compose a config from the repository's conf/ (override paths.* since there is no Hydra run)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose(config_name, overrides=overrides)


class _CliServer:
    """The tests' one tests/cli_server.py process, started at the first command line."""

    process: subprocess.Popen | None = None
    lines: queue.Queue[str] = queue.Queue()  # its stdout, read by a thread: waits can time out

    @classmethod
    def start(cls) -> None:
        cls.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("cli_server.py"))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        atexit.register(cls.process.kill)
        threading.Thread(
            target=lambda: [*map(cls.lines.put, cls.process.stdout)], daemon=True
        ).start()
        assert cls.lines.get(timeout=120).strip() == "ready"

    @classmethod
    def run(
        cls, module: str, argv: list[str], cwd: str, env: dict | None, timeout: float,
        missing: tuple[str, ...] = (), started: Callable[[int], None] | None = None,
    ) -> Any:  # fmt: skip
        if cls.process is None or cls.process.poll() is not None:
            cls.start()
        with tempfile.TemporaryDirectory() as tmp:
            out, err = f"{tmp}/stdout", f"{tmp}/stderr"
            request = {"module": module, "argv": argv, "cwd": cwd, "env": env, "missing": missing}
            cls.process.stdin.write(json.dumps(request | {"stdout": out, "stderr": err}) + "\n")
            cls.process.stdin.flush()
            pid = int(cls.lines.get(timeout=60))
            try:
                if started is not None:
                    started(pid)
                code = int(cls.lines.get(timeout=timeout))
            except BaseException as error:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)  # and what it started (DDP's other ranks)
                cls.lines.get(timeout=60)  # its exit status: the server is free again
                if isinstance(error, queue.Empty):
                    raise subprocess.TimeoutExpired([module, *argv], timeout) from None
                raise
            return subprocess.CompletedProcess(
                [module, *argv], code, Path(out).read_text(), Path(err).read_text()
            )


def run_cli(
    command: list[str], *, cwd: Path | str | None = None, env: dict | None = None,
    timeout: float = 300, missing: tuple[str, ...] = (),
    started: Callable[[int], None] | None = None,
) -> subprocess.CompletedProcess:  # fmt: skip
    """`subprocess.run(command, capture_output=True, text=True, ...)` for `python -m fakeface.X`
    command lines, through the fork server (seconds faster each); other commands, and an
    environment with another PYTHONPATH (imports the server has already made), run as processes.
    `missing` modules fail to import in the command, as if they were not installed; `started` is
    called with the command's pid while it runs (to signal it), and may raise to kill it."""
    cwd = str(cwd or os.getcwd())
    forkable = command[:2] == [sys.executable, "-m"] and command[2].startswith("fakeface")
    if forkable and (env is None or env.get("PYTHONPATH") == os.environ.get("PYTHONPATH")):
        return _CliServer.run(command[2], command[3:], cwd, env, timeout, missing, started)
    assert not (missing or started), "missing= and started= need a python -m fakeface... line"
    return subprocess.run(
        command, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 64-px SeedCNN exported as a classifier file (predict's and the API's tests)."""
    import torch

    from fakeface.deploy.export import export_classifier
    from fakeface.models.nets import SeedCNN

    torch.manual_seed(0)
    net = SeedCNN(image_size=64).eval()
    for bn in (m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)):
        bn.running_var.uniform_(0.05, 0.2)  # sharper outputs than the identity statistics
    return export_classifier(net, tmp_path_factory.mktemp("model") / "c.ts", 64)
