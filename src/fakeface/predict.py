"""Batch prediction: a verdict for every face of every image, streamed to disk as it goes.

    fakeface predict input=<file|dir|glob|list.txt> [detect=true] [format=csv|jsonl|parquet]
    fakeface predict input=<folder> detect=true out=<folder> resume=true    # after a crash or ^C
    fakeface predict input=<folder or list> engine=ray out=<folder>         # Parquet shards on Ray

Every image goes through `fakeface.Detector` (the Python API's scoring path). Results are
written as they come (one CSV or JSONL line per face, flushed after each image; Parquet in
shards), so a crash loses only the images in flight; `resume=true` skips the files the output
already holds (same path, size and modification time). Unreadable files get a row with their
error; the run goes on.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fakeface.batch import (
    FORMATS,
    RowWriter,
    Tally,
    predict_rows,
    read_inputs,
    unscored,
)
from fakeface.cli import hydra_main
from fakeface.detector import Detector
from fakeface.errors import ConfigError

log = logging.getLogger(__name__)


def output_path(cfg: DictConfig) -> Path:
    """Where predictions go: <out>/predictions.<format> (a folder of shards for Parquet)."""
    if cfg.format not in FORMATS:
        raise ConfigError(f"format={cfg.format!r}: use one of {', '.join(FORMATS)}")
    return Path(cfg.out) / f"predictions.{cfg.format}"


def previous_run(out: Path) -> Path:
    """resume=true without out=: the newest earlier run's predictions beside this run's folder."""
    runs = sorted(out.parent.parent.glob(f"*/{out.name}"))
    if not runs:
        raise ConfigError(
            f"resume=true: no earlier predict run holds a {out.name} under {out.parent.parent}; "
            "give the folder to go on with: out=<folder> resume=true"
        )
    log.info("resume: going on with %s", runs[-1])
    return runs[-1]


def detector_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """`fakeface.Detector`'s arguments from a predict config, as plain values (the Ray route
    sends them to its actors, so a model path is made absolute)."""
    model = cfg.classifier
    if model:
        model = str(Path(model).expanduser().resolve())
    return {
        "model": model, "device": cfg.device, "precision": cfg.precision,
        "faces": OmegaConf.to_container(cfg.detector) if cfg.detect else None,
        "margin": float(cfg.margin), "tta": bool(cfg.tta), "max_faces": int(cfg.max_faces),
    }  # fmt: skip


def run_local(cfg: DictConfig, paths: list[Path], out: Path) -> None:
    """Score `paths` in this process, appending to `out`; resume=true skips what it holds."""
    from rich.console import Console

    todo, skipped = unscored(paths, out, cfg.format, cfg.resume)
    detector = Detector(**detector_kwargs(cfg))
    crop = detector.info.trained_on.get("face_crop")
    if crop and not cfg.detect:
        log.warning(
            "this model was trained on face crops (%s, margin %s): give it faces the same way "
            "with detect=true, unless your images are already face crops",
            crop["detector"], crop["margin"],
        )  # fmt: skip
    console = Console()
    tally = Tally(console)
    writer = RowWriter(out, cfg.format, int(cfg.shard_rows))
    try:
        with _progress(console, len(todo)) as advance:
            for rows in predict_rows(detector, todo, cfg.batch_size, cfg.data.num_workers):
                writer.write(rows)
                tally.add(rows)
                advance()
    except KeyboardInterrupt:
        writer.close()
        console.print(
            f"[yellow]interrupted:[/yellow] what was scored is in {out}; run the same command "
            f"with out={out.parent} resume=true to go on",
            highlight=False,
        )
        raise
    writer.close()
    tally.print(out, detector.info, len(paths), skipped)


class _progress:  # noqa: N801 (used like a function: `with _progress(console, total) as advance`)
    """A rich progress bar over files with a rate and an ETA."""

    def __init__(self, console: Any, total: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
        )  # fmt: skip
        self.total = total

    def __enter__(self):  # noqa: ANN204 (returns the advance callable)
        self.bar.start()
        task = self.bar.add_task("files", total=self.total)
        return lambda: self.bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()


def check_config(cfg: DictConfig) -> None:
    """Settings that cannot work, named before anything is loaded."""
    if not cfg.input:
        raise ConfigError(
            "give the images: fakeface predict input=<file|dir|glob|list.txt> "
            "(classifier=<classifier.ts>: your own model instead of the released one)"
        )
    for key in ("batch_size", "max_faces", "shard_rows"):
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key}={value!r}: must be a whole number >= 1")
    if cfg.engine not in ("local", "ray"):
        raise ConfigError(f"engine={cfg.engine!r}: use local or ray")
    if cfg.engine == "ray" and cfg.format != "parquet":
        raise ConfigError(f"engine=ray writes Parquet shards: drop format={cfg.format}")


@hydra_main("predict")
def main(cfg: DictConfig) -> str:
    """CLI: predict `cfg.input` into <out>/predictions.<format>, print the summary."""
    if cfg.engine == "ray":
        cfg.format = "parquet"
    check_config(cfg)
    out = output_path(cfg)
    if not cfg.resume and (out.is_file() or (out.is_dir() and any(out.iterdir()))):
        raise ConfigError(
            f"{out} already holds predictions: add resume=true to go on with it, or choose "
            "another out= (nothing is overwritten)"
        )
    if cfg.resume and not (out.exists() or cfg.out != cfg.paths.output_dir):
        out = previous_run(out)
    paths = read_inputs(cfg.input)
    if cfg.engine == "ray":
        from fakeface.scale import run_ray

        run_ray(
            detector_kwargs(cfg), paths, out, resume=cfg.resume, batch_size=cfg.batch_size,
            workers=int(cfg.ray.workers), address=cfg.ray.address, num_cpus=cfg.ray.num_cpus,
        )  # fmt: skip
        return str(out)
    run_local(cfg, paths, out)
    return str(out)


if __name__ == "__main__":
    main()
