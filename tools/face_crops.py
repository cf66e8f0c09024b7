"""Face crops for the DCGAN: every photo under some folders, cut the way data.face_crop cuts them.

    python tools/face_crops.py <folder> [<folder> ...] --out data/gan_faces [--size 64]
        [--holdout 0.1] [--margin 0.4] [--detector mtcnn]

The largest face of each photo (MTCNN by default, the detector of predict detect=true and of the
released model's training), the square `face_window` around it with the same margin, resized to
size x size, saved as PNG into <out>/train/real/ or, for a seeded `holdout` share of each folder,
<out>/heldout/real/ (real photos the GAN never sees: KID and the detector's ROC-AUC use them).
Photos without a face are left out and counted. Face boxes are cached in <out>/faceboxes.csv
(fakeface.data.faceboxes), so a second run only looks at new files. Then:

    python -m fakeface.train experiment=dcgan_cpu data.root=<out>/train

or both in one command: `--train [override ...]` trains experiment=dcgan_cpu on the crops when
they are cut, with KID measured against the held-out crops, and passes the overrides on
(`--train ckpt_path=last` resumes an interrupted run; the crops already cut are kept).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="folders of face photos (recursive)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=64, help="side of the saved crops (pixels)")
    parser.add_argument("--holdout", type=float, default=0.1, help="share of each folder held out")
    parser.add_argument("--margin", type=float, default=0.4, help="face_window margin (predict's)")
    parser.add_argument("--detector", default="mtcnn", help="a preset of conf/detector/")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", nargs="*", metavar="OVERRIDE", default=None,
                        help="then train experiment=dcgan_cpu on the crops (Hydra overrides)")  # fmt: skip
    args = parser.parse_args(argv)
    if not 0.0 <= args.holdout < 1.0:
        parser.error(f"--holdout {args.holdout}: give a share in [0, 1)")

    from PIL import Image

    from fakeface.data.faceboxes import crop_to_face, face_boxes
    from fakeface.errors import BadImageError
    from fakeface.preprocess import find_images, load_image, resize_rgb

    preset = Path(__file__).resolve().parents[1] / "conf" / "detector" / f"{args.detector}.yaml"
    if not preset.is_file():
        parser.error(f"--detector {args.detector}: no preset {preset}")
    detector = OmegaConf.to_container(OmegaConf.load(preset))
    counts: dict[str, dict[str, int]] = {}
    for folder in args.folders:
        paths = [str(p) for p in find_images(folder, key="folder")]
        boxes = face_boxes(paths, detector, args.out / "faceboxes.csv")
        order = sorted(paths)
        random.Random(f"{args.seed}:{folder.name}").shuffle(order)  # per folder, reproducible
        held = set(order[: round(args.holdout * len(order))])
        # The file name keeps its source folder: two sources may both hold a 0001.jpg.
        source = "_".join(folder.resolve().parts[-2:])
        tally = {"photos": len(paths), "no_face": 0, "unreadable": 0, "train": 0, "heldout": 0}
        for path in paths:
            if boxes[path] is None:
                tally["no_face"] += 1
                continue
            try:
                image = load_image(path)
            except BadImageError:
                tally["unreadable"] += 1
                continue
            split = "heldout" if path in held else "train"
            crop = resize_rgb(crop_to_face(image, boxes[path], args.margin), args.size)
            target = args.out / split / "real" / f"{source}_{Path(path).stem}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(crop).save(target)
            tally[split] += 1
        counts[str(folder)] = tally
        print(f"{folder}: {tally}", flush=True)
    (args.out / "crops.json").write_text(
        json.dumps(vars(args) | {"counts": counts}, indent=2, default=str)
    )
    if args.train is None:
        return 0
    heldout = args.out / "heldout" / "real"
    command = [sys.executable, "-m", "fakeface.train", "experiment=dcgan_cpu",
               f"data.root={args.out / 'train'}",
               *([f"callbacks.gan_monitor.kid_reference={heldout}"] if heldout.is_dir() else []),
               *args.train]  # fmt: skip
    print(" ".join(command), flush=True)
    return subprocess.run(command).returncode


if __name__ == "__main__":
    sys.exit(main())
