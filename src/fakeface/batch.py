"""Batch prediction's rows and files: one row per face, streamed to CSV / JSONL / Parquet shards,
read back and repaired for `resume=true`. `fakeface predict` (and its Ray route,
`fakeface.scale`) write through this module; `predict_table` gives small jobs a DataFrame.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from fakeface.deploy.modelfile import ClassifierInfo, caveat
from fakeface.detector import Detector, Result
from fakeface.errors import ConfigError
from fakeface.preprocess import find_images

log = logging.getLogger(__name__)

# One row per face (per image when no face was searched for, none was found, or it is unreadable).
COLUMNS = (
    "path",  # the image file
    "faces",  # faces found in the image (empty: no face search, or unreadable)
    "face",  # this row's face, 0 = the largest (empty when the row has no face)
    "x", "y", "w", "h",  # its box in image pixels (the whole image without a face search)
    "p_fake", "p_real",  # probabilities (empty when not scored)
    "label",  # the likelier class
    "verdict",  # fake / real / unsure by the model's threshold and unsure band; "no face"
    "novelty",  # distance from the training photos over the model's threshold (> 1: unfamiliar)
    "note",  # why a verdict is unsure, or that the photo is unfamiliar
    "error",  # why the file could not be read ("" when it could)
    "file_bytes", "file_mtime_ns",  # the file as scored: what resume=true compares
)  # fmt: skip
FORMATS = ("csv", "jsonl", "parquet")
MAX_LINES = 20  # verdicts printed one per line; more go to the output file only


def file_stamp(path: str | Path) -> tuple[int | None, int | None]:
    """(size in bytes, modification time in ns) of a file; (None, None) when it is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None, None
    return st.st_size, st.st_mtime_ns


def result_rows(
    result: Result, stamp: tuple[int | None, int | None] = (None, None)
) -> list[dict[str, Any]]:
    """The output rows of one image's Result: one per face, else one for the image."""
    base = {name: None for name in COLUMNS}
    base |= {"path": result.source, "error": result.error, "verdict": "", "label": "", "note": ""}
    base |= {"file_bytes": stamp[0], "file_mtime_ns": stamp[1]}
    if result.face_found is not None:
        base["faces"] = len(result.faces)
    if result.face_found is False:
        return [base | {"verdict": "no face"}]
    if not result.faces:
        return [base]  # unreadable
    rows = []
    for k, face in enumerate(result.faces):
        x, y, w, h = face.box
        rows.append(
            base | {
                "face": k if result.face_found else None, "x": x, "y": y, "w": w, "h": h,
                "p_fake": face.p_fake, "p_real": 1.0 - face.p_fake,
                "label": "fake" if face.p_fake >= 0.5 else "real", "verdict": face.verdict,
                "novelty": face.novelty, "note": face.note,
            }
        )  # fmt: skip
    return rows


# Column types that hold in every shard, whatever a batch's rows leave empty (pandas' nullable
# dtypes: a missing face index stays an integer column, not a float or a null-typed one).
DTYPES = {
    "path": "string", "faces": "Int64", "face": "Int64", "x": "Int64", "y": "Int64",
    "w": "Int64", "h": "Int64", "p_fake": "float64", "p_real": "float64", "label": "string",
    "verdict": "string", "novelty": "float64", "note": "string", "error": "string",
    "file_bytes": "Int64", "file_mtime_ns": "Int64",
}  # fmt: skip


def rows_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a DataFrame with predict's columns and types (Parquet shards, Ray, tests)."""
    return pd.DataFrame(rows, columns=list(COLUMNS)).astype(DTYPES)


def predict_rows(
    detector: Detector, paths: Iterable[str | Path], batch_size: int = 32, num_workers: int = 0
) -> Iterator[list[dict[str, Any]]]:
    """Each path's rows, lazily and in order (what `fakeface predict` writes)."""
    paths = [str(p) for p in paths]
    results = detector.predict(paths, batch_size=batch_size, num_workers=num_workers)
    for path, result in zip(paths, results, strict=True):
        yield result_rows(result, file_stamp(path))


def predict_table(detector: Detector, paths: Iterable[str | Path], **kwargs: Any) -> pd.DataFrame:
    """Every row of `paths` as one DataFrame (small jobs and tests; `predict` streams)."""
    return rows_frame([row for rows in predict_rows(detector, paths, **kwargs) for row in rows])


class RowWriter:
    """Appends rows to predictions.csv / .jsonl (flushed after each image) or writes Parquet
    shards into a predictions.parquet/ folder (part-NNNNN.parquet, `shard_rows` rows each,
    each written to a temporary name and renamed whole, so a crash never leaves half a shard)."""

    def __init__(self, path: Path, fmt: str, shard_rows: int = 10_000) -> None:
        self.path, self.fmt, self.shard_rows = path, fmt, shard_rows
        self.buffer: list[dict[str, Any]] = []
        if fmt == "parquet":
            try:
                import pyarrow  # noqa: F401 (pandas writes Parquet through it)
            except ImportError:
                raise ConfigError(
                    'format=parquet needs pyarrow: pip install pyarrow (or "fakeface[ray]")'
                ) from None
            path.mkdir(parents=True, exist_ok=True)
            self.file = None
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not path.is_file() or path.stat().st_size == 0
        self.file = path.open("a", newline="")
        if fmt == "csv":
            self.csv = csv.DictWriter(self.file, COLUMNS, lineterminator="\n")
            if fresh:
                self.csv.writeheader()

    def write(self, rows: list[dict[str, Any]]) -> None:
        """One image's rows."""
        if self.fmt == "parquet":
            self.buffer.extend(rows)
            if len(self.buffer) >= self.shard_rows:
                self._shard()
            return
        for row in rows:
            if self.fmt == "csv":
                self.csv.writerow({k: "" if v is None else v for k, v in row.items()})
            else:
                self.file.write(json.dumps(row) + "\n")
        self.file.flush()  # what is written survives a crash of this process

    def _shard(self) -> None:
        if not self.buffer:
            return
        number = len(list(self.path.glob("part-*.parquet")))
        final = self.path / f"part-{number:05d}.parquet"
        temporary = self.path / f".{final.name}.tmp"
        rows_frame(self.buffer).to_parquet(temporary, index=False)
        temporary.rename(final)
        self.buffer = []

    def close(self) -> None:
        if self.fmt == "parquet":
            self._shard()
        elif self.file is not None:
            self.file.close()


def read_rows(path: Path, fmt: str) -> pd.DataFrame:
    """The rows an output holds (an empty table when there is none); a Parquet shard that cannot
    be read (a writer killed mid-file) is renamed *.broken and its files count as not scored."""
    if fmt == "parquet":
        tables = []
        for part in sorted(path.glob("*.parquet")) if path.is_dir() else []:
            try:
                tables.append(pd.read_parquet(part))
            except Exception as err:  # noqa: BLE001 (pyarrow's errors for a torn file vary)
                log.warning("%s cannot be read (%s): renamed .broken, its files scored again",
                            part, str(err)[:80])  # fmt: skip
                part.rename(part.with_name(part.name + ".broken"))
        return pd.concat(tables, ignore_index=True).astype(DTYPES) if tables else rows_frame([])
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame(columns=COLUMNS)
    if fmt == "csv":
        table = pd.read_csv(path, dtype=str, keep_default_na=False)  # "" stays "" in text
        for name, dtype in DTYPES.items():
            if dtype != "string":
                table[name] = pd.to_numeric(table[name].replace("", None))
    else:
        table = pd.read_json(path, lines=True, dtype=False)
    return table.astype(DTYPES)


def scored_files(path: Path, fmt: str) -> set[tuple[str, int, int]]:
    """(path, size, mtime) of every file the output at `path` holds in full, after repairing what
    a crash can leave: a half-written last line, the last image with only some of its faces."""
    if fmt != "parquet" and path.is_file():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            path.write_bytes(data[: data.rfind(b"\n") + 1])  # drop the half-written line
    table = read_rows(path, fmt)
    if table.empty:
        return set()
    # an image's rows are complete when there are as many as it has faces (one when none)
    faces = pd.to_numeric(table["faces"], errors="coerce").fillna(0).clip(lower=1)
    expected = faces.groupby(table["path"]).first()
    complete = table.groupby("path").size() == expected
    if not complete.all():
        if fmt == "parquet":  # shards are written whole: an image never straddles a crash
            raise ConfigError(f"{path}: an image's rows are split across shards; score anew")
        keep = table[table["path"].map(complete)]
        log.warning("resume: %d image(s) with some faces missing are scored again",
                    (~complete).sum())  # fmt: skip
        _rewrite(path, fmt, keep)
        table = keep
    done = table.drop_duplicates("path")
    return {
        (str(p), int(b), int(m))
        for p, b, m in zip(done["path"], done["file_bytes"], done["file_mtime_ns"], strict=True)
        if str(b) != "" and not pd.isna(b)
    }


def unscored(paths: list[Path], out: Path, fmt: str, resume: bool) -> tuple[list[Path], int]:
    """The files of `paths` still to score (all of them unless `resume`) and how many the output
    at `out` already holds with the same size and mtime."""
    done = scored_files(out, fmt) if resume else set()
    todo = [p for p in paths if (str(p), *file_stamp(p)) not in done]
    if skipped := len(paths) - len(todo):
        log.info("resume: %d of %d files already in %s, skipped", skipped, len(paths), out)
    return todo, skipped


def _rewrite(path: Path, fmt: str, table: pd.DataFrame) -> None:
    """Replace a CSV / JSONL output by `table` (after a crash left an image incomplete)."""
    temporary = path.with_name(path.name + ".tmp")
    if fmt == "csv":
        table.to_csv(temporary, index=False)
    else:
        table.to_json(temporary, orient="records", lines=True)
    temporary.replace(path)


def read_inputs(spec: str) -> list[Path]:
    """`input=`: an image, a folder, a glob, or a list file (.txt / .lst: one path per line,
    relative paths taken from the list's folder; missing files become error rows)."""
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix.lower() in (".txt", ".lst"):
        lines = [line.strip() for line in path.read_text().splitlines()]
        paths = [Path(line) for line in lines if line and not line.startswith("#")]
        if not paths:
            raise ConfigError(f"input={spec}: the list file names no images (one path per line)")
        return [p if p.is_absolute() else path.parent / p for p in paths]
    return find_images(spec)


class Tally:
    """Counts for the closing summary, and the first verdict lines printed as they come."""

    def __init__(self, console: Any) -> None:
        self.console, self.verdicts, self.errors, self.lines = console, Counter(), [], 0

    def add(self, rows: list[dict[str, Any]]) -> None:
        colours = {"fake": "red", "real": "green", "unsure": "yellow"}
        for row in rows:
            if row["error"]:
                self.errors.append(row["error"])
                continue
            self.verdicts[row["verdict"]] += 1
            if self.lines >= MAX_LINES:
                continue
            self.lines += 1
            if row["verdict"] == "no face":
                text = f"{row['path']}: no face found (not scored)"
            else:
                colour = colours.get(row["verdict"], "white")
                where = f" face {row['face'] + 1}" if row["face"] is not None else ""
                text = (
                    f"{row['path']}{where}: [{colour}]{row['verdict']}[/{colour}] "
                    f"(p_fake {row['p_fake']:.3f})"
                )
            self.console.print(text, highlight=False, soft_wrap=True)

    def print(self, out: Path, info: ClassifierInfo, files: int, skipped: int) -> None:
        from rich.table import Table

        console = self.console
        if self.lines >= MAX_LINES:
            console.print(f"... the rest are in {out}", highlight=False)
        if caveat(info):
            console.print(f"[bold yellow]note:[/bold yellow] {caveat(info)}", highlight=False)
        if skipped:
            console.print(f"resume: {skipped} of {files} files already scored, skipped")
        table = Table(title=f"fakeface predict: {files - skipped} files", title_justify="left")
        for name, justify in (("verdict", "left"), ("rows", "right"), ("fraction", "right")):
            table.add_column(name, justify=justify)
        total = max(sum(self.verdicts.values()), 1)
        for label, count in sorted(self.verdicts.items()):
            table.add_row(label, str(count), f"{count / total:.1%}")
        table.add_row("unreadable", str(len(self.errors)), "", style="red")
        console.print(table)
        for error in self.errors[:MAX_LINES]:
            console.print(f"[red]unreadable[/red] {error}", highlight=False)
        console.print(f"wrote {out}", highlight=False)
