"""Batch prediction with an exported classifier, to a CSV of probabilities.

    python -m fakeface.predict classifier=classifier.ts input=<file|dir|glob> [detect=true] [tta=true]

Writes predictions.csv into the run directory (or `out`). Every image goes through
`fakeface.deploy.inference.score_files`; files that cannot be decoded are listed and skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from fakeface.cli import hydra_main
from fakeface.deploy.inference import CLEAN, score_files
from fakeface.deploy.modelfile import (
    ClassifierInfo,
    caveat,
    load_classifier,
    precision_dtype,
    verdict,
)
from fakeface.errors import ConfigError
from fakeface.preprocess import find_images

log = logging.getLogger(__name__)


def predict_table(
    model: torch.nn.Module,
    info: ClassifierInfo,
    paths: Sequence[str | Path],
    *,
    detector: dict[str, Any] | None = None,
    **scoring: Any,
) -> pd.DataFrame:
    """Classify image files; one row per path, in the order given.

    Columns: path, p_<class> for each class (p_fake, p_real), label (the likelier class),
    verdict (fake / real / unsure by the file's threshold and unsure band; "no face"), then
    `face` (with a detector: was a face found; no face: not scored) and error (unreadable
    files: the reason, with empty probabilities and label).

    Args:
        model, info: from `fakeface.deploy.modelfile.load_classifier`.
        paths: image files (see `fakeface.preprocess.find_images`).
        detector: FaceDetector settings to crop the largest face first; None: whole images.
        scoring: the other keyword arguments of `fakeface.deploy.inference.score_files`.
    """
    scores = score_files(model, info, paths, detector=detector, **scoring)
    probs = scores.probs[CLEAN]
    table = pd.DataFrame({"path": [str(p) for p in paths]})
    for k, name in enumerate(info.class_names):
        table[f"p_{name}"] = probs[:, k]
    readable = scores.readable()
    best = np.nan_to_num(probs, nan=-1.0).argmax(1)
    table["label"] = [
        info.class_names[k] if ok else "" for k, ok in zip(best, readable, strict=True)
    ]
    table["verdict"] = [verdict(float(p), info) for p in table["p_fake"]]
    if detector is not None:
        table["face"] = scores.faces
        no_face = (table["face"] == False).to_numpy()  # noqa: E712 (a pandas mask)
        table.loc[no_face, "verdict"] = "no face"
    table["error"] = [scores.errors.get(i, "") for i in range(len(paths))]
    return table


MAX_LINES = 20  # verdicts printed one per line; more go to the CSV only


def print_summary(
    table: pd.DataFrame, out: Path | None = None, info: ClassifierInfo | None = None
) -> None:
    """A verdict line per image (the first MAX_LINES), counts per verdict, unreadable files."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    colours = {"fake": "red", "real": "green", "unsure": "yellow"}
    for _, row in table.head(MAX_LINES).iterrows():
        if row["error"]:
            continue
        if row["verdict"] == "no face":
            console.print(
                f"{row['path']}: no face found (not scored)", highlight=False, soft_wrap=True
            )
            continue
        colour = colours.get(row["verdict"], "white")
        console.print(
            f"{row['path']}: [{colour}]{row['verdict']}[/{colour}] (p_fake {row['p_fake']:.3f})",
            highlight=False,
            soft_wrap=True,  # one line per image, whatever the terminal's width
        )
    if len(table) > MAX_LINES:
        console.print(f"... and {len(table) - MAX_LINES} more (all in the CSV)")
    if info is not None and caveat(info):
        console.print(f"[bold yellow]note:[/bold yellow] {caveat(info)}", highlight=False)
    readable = table[table["error"] == ""]
    summary = Table(title=f"fakeface predict: {len(table)} files", title_justify="left")
    summary.add_column("verdict")
    summary.add_column("images", justify="right")
    summary.add_column("fraction", justify="right")
    for label, count in readable["verdict"].value_counts().sort_index().items():
        summary.add_row(label, str(count), f"{count / max(len(readable), 1):.1%}")
    summary.add_row("unreadable", str(len(table) - len(readable)), "", style="red")
    console.print(summary)
    for _, row in table[table["error"] != ""].iterrows():
        console.print(f"[red]unreadable[/red] {row['error']}", highlight=False)
    if out is not None:
        console.print(f"wrote {out}", highlight=False)


@hydra_main("predict")
def main(cfg: DictConfig) -> str:
    """CLI: predict `cfg.input`, write <out>/predictions.csv, print the summary."""
    if not cfg.input:
        raise ConfigError(
            "give the images: fakeface predict input=<file|dir|glob> (classifier=<classifier.ts>: "
            "your own model instead of the released one)"
        )
    model, info = load_classifier(cfg.classifier, cfg.device)
    if info.trained_on.get("face_crop") and not cfg.detect:
        log.warning(
            "this model was trained on face crops (%s, margin %s): give it faces the same way "
            "with detect=true, unless your images are already face crops",
            info.trained_on["face_crop"]["detector"], info.trained_on["face_crop"]["margin"],
        )  # fmt: skip
    table = predict_table(
        model,
        info,
        find_images(cfg.input),
        detector=OmegaConf.to_container(cfg.detector) if cfg.detect else None,
        margin=cfg.margin,
        batch_size=cfg.batch_size,
        tta=cfg.tta,
        dtype=precision_dtype(cfg.precision, cfg.device),
        num_workers=cfg.data.num_workers,
        progress="predict",
    )
    out = Path(cfg.out) / "predictions.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    print_summary(table, out, info)
    return str(out)


if __name__ == "__main__":
    main()
