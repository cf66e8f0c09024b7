"""Bad data, crash safety, signals, one-line errors and DDP on two CPU processes.

Tests run as root, where `chmod 000` does not stop reads: "permission denied" is simulated by a
monkeypatched `PIL.Image.open` that raises PermissionError for one file.
"""

from __future__ import annotations

import io
import json
import math
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fakeface.data.datamodule as datamodule_module
from conftest import CONF_DIR, compose, make_face_folder, run_cli
from fakeface.cli import one_line
from fakeface.data.datamodule import FaceDataModule, Tracked
from fakeface.deploy.modelfile import ModelFileError, load_classifier
from fakeface.errors import DatasetError
from fakeface.models.callbacks import AtomicCheckpointIO
from fakeface.models.classifier import CNNClassifier
from fakeface.preprocess import BadImageError, preprocess_file
from fakeface.train import find_last_checkpoint, train

# --------------------------------------------------------------------------- bad inputs


def png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims width x height: a decompression bomb, without the pixels."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    # IHDR's data starts after the 8-byte signature, the chunk length and the chunk type.
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # CRC over type + data
    return bytes(data)


def write_unreadable(folder: Path) -> dict[str, Path]:
    """The files that cannot become pixels, by case name ("deleted" and "denied" start valid)."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8))
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=95)
    files = {
        "truncated": buffer.getvalue()[: len(buffer.getvalue()) // 2],
        "empty": b"",
        "text": b"this is a text file, not a JPEG\n",
        "bomb": png_claiming(30_000, 30_000),  # 900 Mpx > 2 x Image.MAX_IMAGE_PIXELS
        "deleted": buffer.getvalue(),
        "denied": buffer.getvalue(),
    }
    paths = {}
    for name, data in files.items():
        paths[name] = folder / f"bad_{name}.{'png' if name == 'bomb' else 'jpg'}"
        paths[name].write_bytes(data)
    return paths


def write_convertible(folder: Path) -> dict[str, Path]:
    """Images that need a conversion to 8-bit RGB, by case name."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "alpha": folder / "conv_alpha.png",
        "grayscale": folder / "conv_gray.jpg",
        "cmyk": folder / "conv_cmyk.jpg",
        "16bit": folder / "conv_16bit.png",
    }
    Image.new("RGBA", (64, 64), (255, 0, 0, 0)).save(paths["alpha"])  # fully transparent red
    Image.new("L", (64, 64), 100).save(paths["grayscale"])
    Image.new("CMYK", (64, 64), (0, 255, 255, 0)).save(paths["cmyk"])  # pure red in ink
    Image.fromarray(np.full((64, 64), 65535, np.uint16)).save(paths["16bit"])  # I;16 white
    return paths


def deny(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """Make opening `path` raise PermissionError (root ignores chmod 000)."""
    real_open = Image.open

    def guarded_open(fp, *args, **kwargs):  # noqa: ANN001, ANN202
        if isinstance(fp, str | Path) and Path(fp) == path:
            raise PermissionError(13, "Permission denied", str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", guarded_open)


@pytest.mark.parametrize(
    ("case", "expected_rgb"),
    [
        ("alpha", (255, 255, 255)),
        ("grayscale", (100, 100, 100)),
        ("cmyk", (255, 0, 0)),
        ("16bit", (255, 255, 255)),
    ],
)
def test_convertible_images_become_rgb(tmp_path: Path, case: str, expected_rgb: tuple) -> None:
    x = preprocess_file(write_convertible(tmp_path)[case])
    assert x.shape == (3, 128, 128) and x.dtype == torch.float32
    assert (x[:, 64, 64] * 255).round().tolist() == pytest.approx(list(expected_rgb), abs=2)


def test_a_10000px_image_is_resized_not_skipped(tmp_path: Path) -> None:
    path = tmp_path / "huge.jpg"
    Image.new("RGB", (10_000, 10_000), (10, 200, 30)).save(path, quality=90)
    x = preprocess_file(path)
    assert x.shape == (3, 128, 128)
    assert (x[:, 5, 5] * 255).round().tolist() == pytest.approx([10, 200, 30], abs=3)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("truncated", "truncated"),
        ("empty", "cannot identify"),
        ("text", "cannot identify"),
        ("bomb", "decompression bomb"),
        ("deleted", "No such file"),
        ("denied", "Permission denied"),
    ],
)
def test_unreadable_files_raise_bad_image_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, reason: str
) -> None:
    paths = write_unreadable(tmp_path)
    paths["deleted"].unlink()
    deny(monkeypatch, paths["denied"])
    with pytest.raises(BadImageError, match=reason) as info:
        preprocess_file(paths[case])
    assert str(paths[case]) in str(info.value)


def test_skipped_files_ride_from_worker_processes_to_the_main_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_face_folder(tmp_path / "faces", per_class=4)
    bad = write_unreadable(root / "train" / "real")
    deny(monkeypatch, bad["denied"])  # forked workers inherit the patch
    dm = FaceDataModule(
        root=str(root), batch_size=4, num_workers=2, persistent_workers=False, max_bad_fraction=1.0
    )
    dm.setup("fit")
    bad["deleted"].unlink()  # gone after indexing, as in a long run
    sizes, skipped_in_batches = [], set()
    for batch in dm.train_dataloader():
        assert isinstance(batch, Tracked)  # survived pickling from the worker
        skipped_in_batches.update(path for path, _ in batch.skipped)
        x, y = dm.on_before_batch_transfer(batch, 0)
        sizes.append(len(x))
    assert skipped_in_batches == set(dm.skipped) == {str(p) for p in bad.values()}
    assert sizes == [4, 4, 4, 2]  # 14 indexed files: a readable stand-in keeps each batch full


def test_error_policy_and_bad_fraction_stop_with_clear_errors(tmp_path: Path) -> None:
    root = make_face_folder(tmp_path / "faces", per_class=6)
    text = write_unreadable(root / "train" / "fake")["text"]
    for other in (root / "train" / "fake").glob("bad_*"):
        if other != text:
            other.unlink()
    strict = FaceDataModule(root=str(root), num_workers=0, on_bad_image="error")
    strict.setup("fit")
    with pytest.raises(BadImageError, match="bad_text.jpg"):
        for i in range(len(strict.train_set)):
            strict.train_set[i]

    dm = FaceDataModule(root=str(root), batch_size=13, num_workers=0, max_bad_fraction=0.05)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    with pytest.raises(DatasetError, match=r"1 of 13 .* data.max_bad_fraction=0.05"):
        dm.on_before_batch_transfer(batch, 0)  # 1/13 = 7.7% > 5%
    with pytest.raises(ValueError, match="max_bad_fraction"):
        FaceDataModule(root=str(root), max_bad_fraction=2)


def test_skips_count_against_their_own_split_in_a_class_folder_dataset(tmp_path: Path) -> None:
    root = tmp_path / "flat"  # data=folder: root/<class>/*.jpg, split by the DataModule
    for name in ("fake", "real"):
        (root / name).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (32, 32), (20 * i, 0, 0)).save(root / name / f"{i}.jpg")
    text = root / "fake" / "text.jpg"
    text.write_text("not an image")
    dm = FaceDataModule(
        root=str(root), layout="folder", batch_size=64, num_workers=0, max_bad_fraction=0.5
    )
    dm.setup("fit")
    dm.setup("test")
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        for batch in loader:
            dm.on_before_batch_transfer(batch, 0)  # 1 bad file is < half of any split
    assert list(dm.skipped) == [str(text)]


def run_cfg(root: Path, out: Path, *extra: str):
    """A tiny in-process training config (as in test_foundation, at 64 px for speed) into `out`."""
    return compose(
        "train",
        [
            "experiment=cnn",
            "debug=tiny",
            "data.image_size=64",
            f"data.root={root}",
            f"paths.root_dir={out.parent}",
            f"paths.output_dir={out}",
            "callbacks.progress_bar=null",
            "export=false",
            "test=false",
            *extra,
        ],
    )


@pytest.mark.slow
def test_a_run_skips_bad_files_logs_each_once_and_lists_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_face_folder(tmp_path / "faces", per_class=4)
    bad = write_unreadable(root / "train" / "fake")
    write_convertible(root / "train" / "fake")
    deny(monkeypatch, bad["denied"])
    real_index_split = datamodule_module.index_split

    def index_then_delete(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        frame = real_index_split(*args, **kwargs)
        bad["deleted"].unlink(missing_ok=True)  # deleted while the run goes on
        return frame

    monkeypatch.setattr(datamodule_module, "index_split", index_then_delete)
    out = tmp_path / "run"
    metrics = train(
        run_cfg(
            root,
            out,
            "data.max_bad_fraction=0.5",
            "trainer.max_epochs=2",
            "trainer.limit_train_batches=1.0",
        )
    )
    assert metrics["epochs"] == 2  # two passes over every file, and the run finished
    listed = {item["path"]: item["reason"] for item in metrics["skipped_images"]}
    assert set(listed) == {str(p) for p in bad.values()}  # convertible files are not skipped
    assert "Permission denied" in listed[str(bad["denied"])]
    assert "truncated" in listed[str(bad["truncated"])]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["skipped_images"] == metrics["skipped_images"]
    logged = [
        r.getMessage() for r in caplog.records if "skipped unreadable image" in r.getMessage()
    ]
    assert sorted(m.split(": ")[1] for m in logged) == sorted(listed)  # once each over 2 epochs


# --------------------------------------------------------------------------- checkpoints


def test_a_crash_while_saving_leaves_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)

    def crash(obj, f, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        f.write(b"half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="No space"):
        AtomicCheckpointIO().save_checkpoint({"global_step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["global_step"] == 1
    assert os.listdir(path.parent) == ["last.ckpt"]  # no temp file left behind


def test_ckpt_path_last_picks_the_newest_earlier_run(tmp_path: Path) -> None:
    runs = tmp_path / "outputs" / "cnn" / "runs"
    for age, name in enumerate(["new", "old", "current"]):
        ckpt = runs / name / "checkpoints" / "last.ckpt"
        ckpt.parent.mkdir(parents=True)
        ckpt.write_bytes(b"x")
        os.utime(ckpt, (1e9 - age * 100, 1e9 - age * 100) if name != "current" else None)
    found = find_last_checkpoint(tmp_path / "outputs", "cnn", exclude=runs / "current")
    assert found == runs / "new" / "checkpoints" / "last.ckpt"
    with pytest.raises(FileNotFoundError, match="ckpt_path=last"):
        find_last_checkpoint(tmp_path / "outputs", "dcgan", exclude=runs / "current")


def test_the_model_loader_refuses_files_that_are_not_fakeface_exports(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1)}}, checkpoint)
    script = tmp_path / "other.ts"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), script)
    for path, reason in ((checkpoint, "not a readable TorchScript"), (script, "not a fakeface")):
        with pytest.raises(ModelFileError, match=reason) as info:
            load_classifier(path)
        assert "python -m fakeface.export" in str(info.value)


def train_command(tmp_path: Path, faces: Path, run: str, *overrides: str) -> list[str]:
    """`python -m fakeface.train` on the tiny folder, into outputs/cnn/runs/<run>."""
    return [
        sys.executable,
        "-m",
        "fakeface.train",
        "experiment=cnn",
        "debug=tiny",
        "data.image_size=64",
        f"data.root={faces}",
        f"paths.root_dir={tmp_path}",
        f"hydra.run.dir={tmp_path}/outputs/cnn/runs/{run}",
        "callbacks.progress_bar=null",
        "export=false",
        "test=false",
        *overrides,
    ]


def signalled(
    tmp_path: Path, faces: Path, run: str, sig: signal.Signals, pattern: str, *overrides: str
) -> subprocess.CompletedProcess:
    """train_command through the fork server, sent `sig` once `pattern` appears in its run
    directory (training is under way); its result."""
    folder = tmp_path / "outputs" / "cnn" / "runs" / run

    def send(pid: int) -> None:
        wait_for(pattern, folder, pid)
        os.kill(pid, sig)

    command = train_command(tmp_path, faces, run, *overrides)
    return run_cli(command, started=send, timeout=60)


def wait_for(pattern: str, folder: Path, pid: int, timeout: float = 120) -> None:
    """Until a file matching `pattern` is under `folder`; fails if process `pid` ends first or
    time runs out."""
    deadline = time.monotonic() + timeout
    while not any(folder.glob(pattern)):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            raise AssertionError(f"run ended before {pattern} appeared") from None
        assert time.monotonic() < deadline, f"no {pattern} under {folder} after {timeout} s"
        time.sleep(0.02)


@pytest.mark.slow
def test_sigkill_mid_run_then_ckpt_path_last_finishes_the_epochs(tmp_path: Path) -> None:
    faces = make_face_folder(tmp_path / "faces")
    runs = tmp_path / "outputs" / "cnn" / "runs"
    # SIGKILL: no handler runs, only what is on disk counts
    killed = signalled(
        tmp_path, faces, "killed", signal.SIGKILL, "checkpoints/last.ckpt", "trainer.max_epochs=4"
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (runs / "killed" / "metrics.json").exists()  # it really was cut short

    resumed = run_cli(
        train_command(tmp_path, faces, "resumed", "trainer.max_epochs=4", "ckpt_path=last")
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((runs / "resumed" / "metrics.json").read_text())
    epochs = [row["epoch"] for row in metrics["history"]]
    assert metrics["epochs"] == 4 and epochs[-1] == 3 and epochs[0] >= 1  # continued, not restarted
    best = metrics["best_checkpoint"]
    assert torch.load(best, weights_only=True)["state_dict"]
    model = CNNClassifier.load_from_checkpoint(best, map_location="cpu")
    assert model.eval()(torch.rand(1, 3, 64, 64)).shape == (1, 2)


@pytest.mark.slow
def test_last_ckpt_is_the_newest_epoch_even_when_the_best_is_older(tmp_path: Path) -> None:
    faces = make_face_folder(tmp_path / "faces")
    out = tmp_path / "run"
    # monitor=step, mode=min: epoch 0 stays the best forever (Lightning 2.6's own save_last would
    # then leave last.ckpt at epoch 0, and a resume would redo every later epoch).
    overrides = ["trainer.max_epochs=3", "callbacks.model_checkpoint.monitor=step"]
    metrics = train(run_cfg(faces, out, *overrides))
    assert Path(metrics["best_checkpoint"]).name == "epoch_000.ckpt"
    last = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2 and last["global_step"] == 6  # 3 epochs x 2 batches


@pytest.mark.slow
def test_sigterm_and_ctrl_c_stop_after_saving_last_ckpt(tmp_path: Path) -> None:
    faces = make_face_folder(tmp_path / "faces")
    runs = tmp_path / "outputs" / "cnn" / "runs"
    # No per-epoch last.ckpt: any last.ckpt is the interrupt handler's.
    for sig, expected_rc in ((signal.SIGTERM, 143), (signal.SIGINT, 1)):
        stopped = signalled(
            tmp_path, faces, sig.name, sig, "checkpoints/epoch_*.ckpt",  # training is under way
            "trainer.max_epochs=100", "callbacks.last_checkpoint=null",
        )  # fmt: skip
        log = stopped.stdout + stopped.stderr
        assert stopped.returncode == expected_rc, log[-3000:]
        assert "resume with ckpt_path=last" in log
        last = runs / sig.name / "checkpoints" / "last.ckpt"
        state = torch.load(last, weights_only=True)
        assert state["global_step"] >= 2  # at least the first epoch's two batches
        assert not (runs / sig.name / "metrics.json").exists()

    # The interrupt checkpoint resumes: one more epoch from where SIGTERM stopped.
    last = runs / "SIGTERM" / "checkpoints" / "last.ckpt"
    epoch = torch.load(last, weights_only=True)["epoch"]
    metrics = train(
        run_cfg(faces, tmp_path / "after", f"ckpt_path={last}", f"trainer.max_epochs={epoch + 1}")
    )
    assert metrics["epochs"] == epoch + 1


# --------------------------------------------------------------------------- one-line errors


@pytest.mark.slow
def test_config_and_data_errors_print_one_line_without_a_traceback(tmp_path: Path) -> None:
    faces = make_face_folder(tmp_path / "faces")
    one_bad = make_face_folder(tmp_path / "one_bad")
    (one_bad / "train" / "fake" / "zz_text.jpg").write_text("not an image")
    base = [
        "experiment=cnn",
        "debug=tiny",
        "data.image_size=64",
        f"paths.root_dir={tmp_path}",
        "callbacks.progress_bar=null",
        "export=false",
        "test=false",
    ]
    cases = [  # (overrides, environment, what stderr must say)
        (["ckpt_path=last", f"data.root={faces}"], {}, "ckpt_path=last: no earlier run"),
        (["data.rooot=x"], {}, "Could not override 'data.rooot'"),
        (
            [f"data.root={faces}", "data.batch_size=abc"],
            {},
            "data.batch_size='abc': must be a whole",
        ),
        ([f"data.root={faces}", "trainer.max_epochs=-1"], {}, "trainer.max_epochs=-1: must be"),
        ([f"data.root={tmp_path}/nowhere"], {}, f"data root {tmp_path}/nowhere does not exist"),
        ([f"data.root={faces}", "model.arch=resnet9000"], {}, "unknown model.arch='resnet9000'"),
        ([f"data.root={faces}", "data.train_crop=32"], {}, "data.train_crop needs a model that"),
        (
            [f"data.root={faces}", "data.batch_size=20", "model.step_batch_size=8"],
            {},
            "model.step_batch_size=8 does not divide data.batch_size=20",
        ),
        (
            [f"data.root={faces}", "model.step_batch_size=4", "trainer.gradient_clip_val=1.0"],
            {},
            "trainer.gradient_clip_val=1.0 cannot run with model.step_batch_size=4",
        ),
        (
            [
                f"data.root={faces}",
                "model.compile=cuda-graphs",
                "+trainer.accumulate_grad_batches=2",
            ],
            {},
            "trainer.accumulate_grad_batches=2 cannot run with model.compile=cuda-graphs",
        ),
        (
            [f"data.root={one_bad}", "trainer.limit_train_batches=1.0"],
            {},
            "1 of 13 images read from split 'train' are unreadable",
        ),
        (
            [
                f"data.root={one_bad}",
                "trainer.limit_train_batches=1.0",
                "data.on_bad_image=error",
                "data.num_workers=2",
            ],
            {},
            "cannot read image " + str(one_bad / "train/fake/zz_text.jpg"),
        ),
        (
            [
                "hydra.mode=MULTIRUN",  # = -m
                f"data.root={faces}",
                "trainer=ddp",
                "trainer.accelerator=cpu",
                "trainer.devices=2",
                "model.lr=0.1,0.01",
            ],
            {},
            "re-run the whole sweep in each process",
        ),
        ([f"data.root={faces}", "data.batch_size=abc"], {"HYDRA_FULL_ERROR": "1"}, "ConfigError"),
        (
            ["INSPECT", f"data.root={tmp_path}/nowhere", f"out={tmp_path}/report"],
            {},
            f"data root {tmp_path}/nowhere does not exist",
        ),
    ]
    # Command lines for fakeface.train, or for fakeface.data.inspect where they start with INSPECT.
    runs = [
        run_cli(
            [sys.executable, "-m", "fakeface.data.inspect", *argv[1:], f"paths.root_dir={tmp_path}"]
            if argv[0] == "INSPECT"
            else [sys.executable, "-m", "fakeface.train", *base, *argv],
            cwd=tmp_path,
            env={**os.environ, **env},
        )
        for argv, env, _ in cases
    ]
    for run, (argv, env, message) in zip(runs, cases, strict=True):
        log = run.stdout + run.stderr
        assert run.returncode == 1 and message in log, (argv, log[-2000:])
        if env:  # HYDRA_FULL_ERROR=1 keeps the full traceback
            assert "Traceback" in log
            continue
        assert "Traceback" not in log, (argv, log[-2000:])
        ours = [line for line in log.splitlines() if line.startswith("fakeface: error:")]
        assert len(ours) == (0 if "rooot" in message else 1), log[-2000:]


def test_one_line_unwraps_worker_tracebacks() -> None:
    wrapped = BadImageError(
        "Caught BadImageError in DataLoader worker process 0.\nOriginal Traceback (most recent "
        'call last):\n  File "x.py", line 1\nfakeface.preprocess.BadImageError: cannot read image '
        "/d/a.jpg: truncated"
    )
    assert one_line(wrapped) == "cannot read image /d/a.jpg: truncated"


# --------------------------------------------------------------------------- DDP


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_shards_the_data_and_writes_one_run(tmp_path: Path) -> None:
    faces = make_face_folder(tmp_path / "faces", per_class=8)  # 16 training images
    # rank 0 through the fork server; Lightning starts rank 1 as a fresh `python -m` process
    result = run_cli(
        train_command(
            tmp_path, faces, "ddp", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
            "trainer.limit_train_batches=1.0", "test=true",
        ),
        timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    run = tmp_path / "outputs" / "cnn" / "runs" / "ddp"
    assert list((tmp_path / "outputs").rglob("metrics.json")) == [run / "metrics.json"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["train_batches_per_epoch"] == 2  # 16 images / 2 ranks / batch 4 (alone: 4)
    # the test split ran under DDP too: every test metric, each a finite number
    assert set(metrics["test"]) == {f"test/{k}" for k in ("loss", "acc", "ap", "auroc", "f1")}
    assert all(math.isfinite(v) for v in metrics["test"].values())
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "epoch_000.ckpt",
        "last.ckpt",
    ]
    assert (run / "train_ddp_process_1.log").exists()  # rank 1 ran in the same run directory


def test_slurm_launcher_preset_follows_the_trainer() -> None:
    # The [slurm] extra is part of [dev]: CI composes the launcher, it never skips this.
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    overrides = [
        "hydra/launcher=slurm",
        "trainer=ddp",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        "paths.root_dir=/tmp",
    ]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = hydra_compose("train", overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)


@pytest.mark.slow
def test_last_ckpt_holds_the_final_epoch_when_saved_every_n_epochs(
    face_folder: Path, tmp_path: Path
) -> None:
    """last.ckpt every 2 epochs over 3 epochs: the final weights are still saved at the end."""
    out = tmp_path / "run"
    cfg = compose(
        "train",
        [
            "experiment=cnn", "debug=tiny", f"data.root={face_folder}", f"paths.root_dir={tmp_path}",
            f"paths.output_dir={out}", "trainer.max_epochs=3", "export=false", "test=false",
            "callbacks.progress_bar=null", "logger=null", "+callbacks.last_checkpoint.every_n_epochs=2",
        ],
    )  # fmt: skip
    train(cfg)
    saved = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    # saved after the fit: 3 epochs done (epochs 0-2, 2 batches each), not the epoch-1 save
    assert saved["epoch"] == 3 and saved["global_step"] == 6
