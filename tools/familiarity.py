"""Fit a model's "unfamiliar photo" reference (fakeface.familiar) and measure it.

    python tools/familiarity.py --train <folder> [<folder> ...] --leftout <folder> [...]
        [--model <classifier.ts>] [--out <model>.familiar.npz] [--report docs/eval/familiar.json]

--train: the folders the model was trained on (every image, both classes): 80 % of each
folder's face crops become the reference, 20 % (seeded) fit the threshold and stand for the
in-distribution photos. --leftout: folders of real photos the model never saw: how often the
signal fires there, overall and among the photos the model calls fake or unsure, and (for
folders with a FairFace-style labels.csv: file, age, gender) false alarms by age group and
gender. Face crops: the largest MTCNN face with margin 0.4, the crop `predict detect=true`
scores; boxes cached in data/familiar/faceboxes.csv.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def measured(folder: Path, cache: Path, size: int, detector, features) -> dict:  # noqa: ANN001
    """paths, crops, features and the model's p_fake / verdict of `folder`'s faces; kept in
    <cache folder>/<folder>.npz, so refitting with other settings costs seconds."""
    store = cache.parent / (str(folder).strip("/").replace("/", "_") + ".npz")
    if store.is_file():
        with np.load(store, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    paths, pixels = crops(folder, cache, size)
    results = list(detector.predict(list(pixels), batch_size=64))
    found = {
        "paths": np.array(paths),
        "features": features(pixels).float().numpy(),
        "p_fake": np.array([r.faces[0].p_fake for r in results]),
        "verdict": np.array([r.faces[0].verdict for r in results]),
    }  # fmt: skip
    np.savez(store, **found)
    return found


def crops(folder: Path, cache: Path, size: int) -> tuple[list[str], np.ndarray]:
    """(paths, N x size x size x 3 uint8) of every image with a face under `folder`."""
    from omegaconf import OmegaConf

    from fakeface import conf_dir
    from fakeface.data.faceboxes import crop_to_face, face_boxes
    from fakeface.preprocess import find_images, load_image, resize_rgb

    paths = [str(p) for p in find_images(folder)]
    mtcnn = OmegaConf.to_container(OmegaConf.load(conf_dir() / "detector" / "mtcnn.yaml"))
    boxes = face_boxes(paths, mtcnn, cache)
    kept = [p for p in paths if boxes[p] is not None]
    pixels = [resize_rgb(crop_to_face(load_image(p), boxes[p], 0.4), size) for p in kept]
    return kept, np.stack(pixels)


def group_rates(frame: pd.DataFrame, by: str) -> dict:
    """Per group: photos, share called fake at 0.5 and at the model's threshold, unsure, fired."""
    out = {}
    for name, part in frame.groupby(by):
        out[str(name)] = {
            "photos": len(part),
            "fake_at_0.5": round(float((part["p_fake"] >= 0.5).mean()), 4),
            "fake_at_threshold": round(float((part["verdict"] == "fake").mean()), 4),
            "unsure": round(float((part["verdict"] == "unsure").mean()), 4),
            "unfamiliar": round(float((part["novelty"] > 1).mean()), 4),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", nargs="+", type=Path, required=True)
    parser.add_argument("--leftout", nargs="*", type=Path, default=[])
    parser.add_argument("--model", default=None, help="classifier file (default: the released)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "eval" / "familiar.json")
    parser.add_argument("--cache", type=Path, default=ROOT / "data" / "familiar" / "faceboxes.csv")
    parser.add_argument("--quantile", type=float, default=0.95)
    parser.add_argument("--dims", type=int, default=128, help="main axes kept")
    parser.add_argument("--k", type=int, default=10, help="the k-th nearest reference crop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dry-run", action="store_true", help="measure, write nothing")
    args = parser.parse_args(argv)

    from fakeface.detector import Detector
    from fakeface.evaluation.kid import KIDFeatures
    from fakeface.familiar import SUFFIX, Familiarity
    from fakeface.weights import RELEASED

    model_file = Path(args.model) if args.model else RELEASED
    out = args.out or model_file.with_name(model_file.stem + SUFFIX)
    plain = Detector(args.model, faces=None, familiar=False)
    features = KIDFeatures("cpu")
    rng = random.Random(args.seed)
    reference, heldout, held = [], [], {}
    for folder in args.train:
        data = measured(folder, args.cache, plain.info.image_size, plain, features)
        order = list(range(len(data["paths"])))
        rng.shuffle(order)
        cut = int(0.8 * len(order))
        reference.append(data["features"][order[:cut]])
        heldout.append(data["features"][order[cut:]])
        held[folder.name] = data["features"][order[cut:]]
        print(f"{folder}: {len(order)} crops, {cut} in the reference", flush=True)
    about = {
        "train": [str(f) for f in args.train], "reference": int(sum(map(len, reference))),
        "heldout": int(sum(map(len, heldout))), "quantile": args.quantile,
        "features": "ImageNet EfficientNet-Lite0, pooled, 128 px", "dims": args.dims, "k": args.k,
    }  # fmt: skip
    familiar = Familiarity.fit(
        np.concatenate(reference), np.concatenate(heldout), dims=args.dims, k=args.k,
        quantile=args.quantile, about=about,
    )  # fmt: skip
    if not args.dry_run:
        familiar.save(out)
        print(f"wrote {out} (threshold {familiar.threshold:.4f})")
    report: dict = {"about": about, "threshold": familiar.threshold, "in_distribution": {}}
    for name, feats in held.items():
        fired = familiar.novelty(feats) > 1
        report["in_distribution"][name] = {
            "photos": len(feats), "unfamiliar": round(float(fired.mean()), 4)
        }  # fmt: skip
    report["leftout"] = {}
    for folder in args.leftout:
        data = measured(folder, args.cache, plain.info.image_size, plain, features)
        frame = pd.DataFrame({"p_fake": data["p_fake"], "verdict": data["verdict"]})
        frame["novelty"] = familiar.novelty(data["features"])
        frame["file"] = [Path(p).name for p in data["paths"]]
        doubtful = frame["verdict"].isin(["fake", "unsure"])
        entry = {
            "photos": len(frame),
            "fake_at_0.5": round(float((frame["p_fake"] >= 0.5).mean()), 4),
            "fake_at_threshold": round(float((frame["verdict"] == "fake").mean()), 4),
            "unsure": round(float((frame["verdict"] == "unsure").mean()), 4),
            "unfamiliar": round(float((frame["novelty"] > 1).mean()), 4),
            "unfamiliar_among_fake_or_unsure": round(
                float((frame["novelty"][doubtful] > 1).mean()) if doubtful.any() else 0.0, 4
            ),
        }
        labels = folder.parent / "labels.csv" if folder.name == "real" else folder / "labels.csv"
        if labels.is_file():
            frame = frame.merge(pd.read_csv(labels), on="file")
            entry["by_age"] = group_rates(frame, "age")
            entry["by_gender"] = group_rates(frame, "gender")
        report["leftout"][str(folder.relative_to(folder.parents[1]))] = entry
    if args.dry_run:
        print(json.dumps({k: v for k, v in report.items() if k != "about"}))
        return 0
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "about"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
