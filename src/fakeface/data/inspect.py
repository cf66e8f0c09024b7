"""Dataset inspection: python -m fakeface.data.inspect data.root=...   (or data=synthetic)

Reads every file once (content hash, header, a full decode through the training path) and writes
`index.csv` (one row per file), prints counts per split and class, image sizes and modes, duplicate
files across splits (leakage) and across classes (conflicting labels) and unreadable files, and
saves `samples.png` (a 3x3 labelled grid, as in the original) and `sizes.png` (histograms).
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig
from PIL import Image
from rich.console import Console
from rich.progress import track
from rich.table import Table

from fakeface.cli import hydra_main
from fakeface.data.index import build_index
from fakeface.errors import BadImageError, ConfigError
from fakeface.evaluation.plots import plot_samples, plot_sizes
from fakeface.preprocess import load_image

log = logging.getLogger(__name__)


def describe_file(path: str, decode: bool = True) -> dict[str, Any]:
    """Bytes, SHA-1, header size and mode of one file, and why it cannot be read (or None).

    Args:
        decode: decode the pixels with `load_image` (as training will), which finds truncated
            files; False reads only the header (fast).
    """
    row: dict[str, Any] = dict.fromkeys(("bytes", "sha1", "width", "height", "mode", "error"))
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        row["error"] = str(err)
        return row
    row["bytes"], row["sha1"] = len(data), hashlib.sha1(data).hexdigest()
    try:
        with Image.open(path) as image:  # the header only: size and mode before conversion
            row.update(width=image.width, height=image.height, mode=image.mode)
        if decode:
            load_image(path)
    except BadImageError as err:
        row["error"] = str(err.__cause__ or err)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        row["error"] = str(err) or type(err).__name__  # the header alone is unreadable
    return row


def _describe_decoded(path: str) -> dict[str, Any]:
    return describe_file(path, decode=True)


def _describe_header(path: str) -> dict[str, Any]:
    return describe_file(path, decode=False)


def read_all(paths: list[str], decode: bool, workers: int) -> pd.DataFrame:
    """describe_file for every path (in `workers` processes, 0 = here), with a progress bar."""
    describe = _describe_decoded if decode else _describe_header  # picklable for the pool
    label = "decoding + hashing" if decode else "hashing"
    if workers > 0:
        with ProcessPoolExecutor(workers) as pool:
            rows = list(
                track(pool.map(describe, paths, chunksize=64), total=len(paths), description=label)
            )
    else:
        rows = [describe(p) for p in track(paths, description=label)]
    return pd.DataFrame(rows, columns=["bytes", "sha1", "width", "height", "mode", "error"])


def duplicate_groups(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per content hash held by several files: files, splits, classes and the kind."""
    hashed = frame.dropna(subset=["sha1"])
    groups = hashed[hashed.duplicated("sha1", keep=False)].groupby("sha1")
    table = groups.agg(
        files=("image_path", list),
        splits=("split", lambda s: sorted(set(s))),
        classes=("class_name", lambda s: sorted(set(s))),
    )
    # Across classes = the same picture with two labels; across splits = test leaking into train.
    table["across_classes"] = table["classes"].map(len) > 1
    table["across_splits"] = table["splits"].map(len) > 1
    return table.reset_index()


def summarize(frame: pd.DataFrame) -> dict[str, Any]:
    """Counts, sizes, modes, duplicates and unreadable files of an inspected index."""
    sizes = frame.dropna(subset=["width"])
    dups = duplicate_groups(frame)
    return {
        "images": len(frame),
        "counts": {
            split: group.groupby("class_name").size().to_dict()
            for split, group in frame.groupby("split", sort=False)
        },
        "sizes": (
            sizes["width"].astype(int).astype(str) + "x" + sizes["height"].astype(int).astype(str)
        )
        .value_counts()
        .to_dict(),
        "modes": frame["mode"].dropna().value_counts().to_dict(),
        "duplicate_groups": len(dups),
        "duplicates_across_splits": dups[dups["across_splits"]]["files"].tolist(),
        "duplicates_across_classes": dups[dups["across_classes"]]["files"].tolist(),
        "unreadable": frame.loc[frame["error"].notna(), ["image_path", "error"]].to_dict("records"),
    }


def print_report(summary: dict[str, Any], console: Console, show: int) -> None:
    """Rich tables: counts per split and class, sizes and modes, duplicates, unreadable files."""
    classes = sorted({c for counts in summary["counts"].values() for c in counts})
    counts = Table(title=f"{summary['images']} images")
    for column in ("split", *classes, "total"):
        counts.add_column(column, justify="left" if column == "split" else "right")
    for split, per_class in summary["counts"].items():
        row = [per_class.get(c, 0) for c in classes]
        counts.add_row(split, *map(str, row), str(sum(row)))
    console.print(counts)

    formats = Table(title="image sizes and modes")
    formats.add_column("size (WxH)")
    formats.add_column("files", justify="right")
    formats.add_column("mode")
    formats.add_column("files", justify="right")
    sizes, modes = list(summary["sizes"].items())[:show], list(summary["modes"].items())[:show]
    for i in range(max(len(sizes), len(modes))):
        size = sizes[i] if i < len(sizes) else ("", "")
        mode = modes[i] if i < len(modes) else ("", "")
        formats.add_row(size[0], str(size[1]), mode[0], str(mode[1]))
    console.print(formats)

    problems = Table(title="problems")
    problems.add_column("kind")
    problems.add_column("count", justify="right")
    problems.add_column(f"files (first {show})", overflow="fold")
    for kind, key in (
        ("duplicates across splits", "duplicates_across_splits"),
        ("duplicates across classes", "duplicates_across_classes"),
    ):
        groups = summary[key]
        listed = "\n".join(" = ".join(group) for group in groups[:show])
        problems.add_row(kind, str(len(groups)), listed or "-")
    bad = summary["unreadable"]
    listed = "\n".join(f"{row['image_path']}: {row['error']}" for row in bad[:show])
    problems.add_row("unreadable files", str(len(bad)), listed or "-")
    problems.add_row("duplicate groups (any)", str(summary["duplicate_groups"]), "")
    console.print(problems)


def inspect_dataset(cfg: DictConfig, console: Console | None = None) -> dict[str, Any]:
    """Index, read and report a dataset; write index.csv, samples.png and sizes.png to `cfg.out`."""
    if not isinstance(cfg.data.root, str):
        raise ConfigError(f"data.root={cfg.data.root}: inspect reads one folder at a time")
    root = Path(cfg.data.root).expanduser()
    if cfg.data.get("synthetic"):
        # data=synthetic: generate the set first, as FaceDataModule.prepare_data does (without
        # importing Lightning, which this tool does not otherwise need)
        from fakeface.data.synthetic import generate_synthetic

        generate_synthetic(root, **cfg.data.synthetic)
    # Inspect the splits that exist; with none, build_index says what the layout should be.
    splits = tuple(s for s in cfg.splits if (root / s).is_dir()) or tuple(cfg.splits)
    classes = list(cfg.data.classes) if cfg.data.get("classes") else None
    frame = build_index(root, splits, classes)
    details = read_all(frame["image_path"].tolist(), cfg.decode, cfg.data.num_workers)
    frame = pd.concat([frame, details], axis=1)

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "index.csv", index=False)
    summary = summarize(frame)
    print_report(summary, console or Console(), cfg.show)
    plot_samples(frame, out / "samples.png", cfg.samples, cfg.seed)
    plot_sizes(frame, out / "sizes.png")
    log.info("wrote %s, %s and %s", out / "index.csv", out / "samples.png", out / "sizes.png")
    return summary


@hydra_main("inspect")
def main(cfg: DictConfig) -> None:
    """CLI: inspect the dataset, write index.csv, samples.png and sizes.png to `cfg.out`."""
    inspect_dataset(cfg)


if __name__ == "__main__":
    main()
