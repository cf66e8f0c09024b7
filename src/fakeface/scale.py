"""`fakeface predict engine=ray`: the same scoring on Ray Data, from one machine to a cluster.

Each Ray actor holds one `fakeface.Detector` (one CPU, one torch thread) and turns batches of
paths into predict's rows (`fakeface.predict.result_rows`); the rows land in Parquet shards in
the output folder. docs/scale.md says how to start a cluster and what throughput to expect.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fakeface.errors import ConfigError

RAY_EXTRA = 'pip install "fakeface[ray]"'


class ScoreBatch:
    """A Ray Data callable class: {"path", "file"} batches -> predict's rows, one Detector per
    actor. `path` is written as the user gave it, `file` (absolute) is what the actor opens."""

    def __init__(self, settings: dict[str, Any], threads: int = 1) -> None:
        import torch

        from fakeface.detector import Detector

        torch.set_num_threads(threads)  # the actor's share of the node: no oversubscription
        self.detector = Detector(**settings)

    def __call__(self, batch: dict[str, np.ndarray]) -> pd.DataFrame:
        from fakeface.batch import predict_rows, rows_frame

        files = [str(f) for f in batch["file"]]
        scored = predict_rows(self.detector, files, batch_size=max(len(files), 1))
        return rows_frame([
            row | {"path": str(path), "error": row["error"].replace(file, str(path))}
            for path, file, rows in zip(batch["path"], files, scored, strict=True)
            for row in rows
        ])  # fmt: skip


def run_ray(
    settings: dict[str, Any], paths: list[Path], out: Path, *, resume: bool = False,
    batch_size: int = 32, workers: int = 2, address: str | None = None,
    num_cpus: int | None = None,
) -> None:  # fmt: skip
    """Score `paths` on Ray Data into Parquet shards under `out`.

    Args:
        settings: `fakeface.Detector`'s arguments (plain values: they travel to the actors;
            a model path must be absolute or valid on every node).
        paths: image files, as the rows will name them.
        out: the shard folder (predictions.parquet/).
        resume: skip the files the readable shards already hold.
        batch_size: images per Ray batch (one forward pass of one actor).
        workers: actors, one CPU each.
        address: a Ray cluster ("auto", ray://host:10001); None: a local Ray (or RAY_ADDRESS).
        num_cpus: a local Ray's CPUs (None: all of this machine's).
    """
    try:
        import ray
    except ImportError:
        raise ConfigError(f"engine=ray needs Ray Data: {RAY_EXTRA}") from None
    from rich.console import Console

    from fakeface.batch import Tally, unscored
    from fakeface.deploy.modelfile import load_classifier

    todo, skipped = unscored(paths, out, "parquet", resume)
    ray.init(
        address=address, num_cpus=None if address else num_cpus,
        include_dashboard=False, ignore_reinit_error=True, configure_logging=False,
    )  # fmt: skip
    before = set(out.glob("*.parquet")) if out.is_dir() else set()
    if todo:
        items = [{"path": str(p), "file": str(Path(p).resolve())} for p in todo]
        # blocks are what actors take one at a time: one batch each, enough for every actor to
        # be busy, at most 100 per actor (a million photos would otherwise make 31,250 tasks)
        blocks = min(max(math.ceil(len(items) / batch_size), workers), 100 * workers)
        dataset = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
            ScoreBatch,
            fn_constructor_args=(settings,),
            batch_size=batch_size,
            batch_format="numpy",
            concurrency=workers,
            num_cpus=1,
        )
        dataset.write_parquet(str(out.resolve()))
    tally = Tally(Console())  # the summary counts this run's shards
    for shard in sorted(set(out.glob("*.parquet")) - before):
        table = pd.read_parquet(shard)
        tally.add(table.astype(object).where(table.notna(), None).to_dict("records"))
    tally.print(out, load_classifier(settings["model"])[1], len(paths), skipped)
