"""The detector's trust protocol on the development photo sets (docs/evaluation.md, "Trust").

Trains a recipe with generators and real sources left out of training, then scores what was left
out: ROC-AUC of each left-out generator against the run's test reals, and the share of each
left-out real source called fake. Every run is a plain `python -m fakeface.train` and
`python -m fakeface.evaluate`; this script only names the folders and gathers report.json.

    python tools/protocol.py dev_data=../shared/data out=outputs/protocol recipe=wild seeds=0
        [runs=lo_sg3_studio,lo_sd_web,...] [extra="data.epoch_size=2000 trainer.max_epochs=4"]

Writes <out>/<recipe>/<run>_s<seed>/ (the training run, eval/ inside; the run trained on
everything also press/: press-sports' whole photos through detect=true) and <out>/results.jsonl.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

REALS = {  # left-out real source -> its folder under dev_data
    "studio-tw": "faces-reals/studio-tw/real",
    "web-mixed": "faces-reals/web-mixed/real",
    "film-imfdb": "faces-reals/film-imfdb/real",
    "utkface": "faces-xsrc/real",
}
GENERATORS = {"sg3": "faces-sg3/fake", "sd21": "faces-sd/fake", "sg2": "faces-xsrc/fake"}
ALL = ["faces-dev", "faces-xsrc", "faces-sg3", "faces-sd", "faces-reals/studio-tw",
       "faces-reals/web-mixed", "faces-reals/film-imfdb"]  # fmt: skip

# run -> (training folders, held-out groups). Each run leaves one generator and one real source
# out at once (two questions per training run); lo_utk leaves only faces-xsrc's reals out.
RUNS = {
    "all": (ALL, {}),
    "lo_sg3_studio": (
        [f for f in ALL if f not in ("faces-sg3", "faces-reals/studio-tw")],
        {"sg3": GENERATORS["sg3"], "studio-tw": REALS["studio-tw"]},
    ),
    "lo_sd_web": (
        [f for f in ALL if f not in ("faces-sd", "faces-reals/web-mixed")],
        {"sd21": GENERATORS["sd21"], "web-mixed": REALS["web-mixed"]},
    ),
    "lo_sg2_film": (  # StyleGAN2 out: faces-dev and faces-xsrc keep only their reals
        [
            "faces-dev/real",
            "faces-xsrc/real",
            "faces-sg3",
            "faces-sd",
            "faces-reals/studio-tw",
            "faces-reals/web-mixed",
        ],
        {"sg2": GENERATORS["sg2"], "sg2-dev": "faces-dev/fake", "film-imfdb": REALS["film-imfdb"]},
    ),  # fmt: skip
    "lo_utk": (
        [f for f in ALL if f != "faces-xsrc"] + ["faces-xsrc/fake"],
        {"utkface": REALS["utkface"]},
    ),
}
RECIPES = {  # recipe -> overrides on top of experiment=detector (which crops faces: data.face_crop)
    "crop": [],
    "wild": ["data.face_crop=null"],  # whole images, as stored
    "source": ["data.face_crop=null", "data.augment=source"],
    "cnn": ["experiment=detector_cnn"],
    # FFHQ's reals, the one real source from the generators' own domain, drawn 3x as often, and
    # plain studio-like backdrops drawn on both classes
    "ffhq3bg": [
        "data.face_crop=null",
        "data.source_weights={FFHQ: 3}",
        "data.augment=flip+crop+jitter+light+background+resample+blur+jpeg",
    ],
}


def recipe_overrides(recipe: str, folders: list[str]) -> list[str]:
    """The recipe's overrides; FFHQ names faces-dev's folder as this run's data names it."""
    ffhq = "faces-dev" if "faces-dev" in folders else "faces-dev/real"
    return [o.replace("FFHQ", ffhq) for o in RECIPES[recipe]]


def run(cmd: list[str], log: Path) -> None:
    print(" ".join(cmd), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"failed ({done.returncode}), see {log}")


def main(args: dict[str, str]) -> None:
    dev = Path(args.get("dev_data", "../shared/data")).resolve()
    out = Path(args.get("out", "outputs/protocol")).resolve()
    recipe = args.get("recipe", "crop")
    extra = args.get("extra", "").split()
    for seed in [int(s) for s in args.get("seeds", "0").split(",")]:
        for name in args.get("runs", ",".join(RUNS)).split(","):
            folders, held_out = RUNS[name]
            run_dir = out / recipe / f"{name}_s{seed}"
            if (run_dir / "eval" / "report.json").is_file():
                continue  # done before: rerunning the script resumes
            roots = ",".join(str(dev / f) for f in folders)
            overrides = recipe_overrides(recipe, folders)
            experiment = [o for o in overrides if o.startswith("experiment=")]
            start = time.time()
            run([sys.executable, "-m", "fakeface.train", *(experiment or ["experiment=detector"]),
                 "data=devsets", f"data.root=[{roots}]", f"seed={seed}", f"data.split_seed={seed}",
                 f"hydra.run.dir={run_dir}", "logger=null",
                 *[o for o in overrides if o not in experiment], *extra],
                run_dir.with_suffix(".train.log"))  # fmt: skip
            train_s = time.time() - start
            groups = ",".join(f"{k}: {dev / v}" for k, v in held_out.items())
            # a model trained on face crops is scored on the same crops (predict detect=true)
            crops = "data.face_crop=null" not in overrides and not experiment
            run([sys.executable, "-m", "fakeface.evaluate", f"classifier={run_dir}/classifier.ts",
                 "data=folder", f"data.split_file={run_dir}/split.csv", "split=test",
                 f"groups={{{groups}}}", f"hydra.run.dir={run_dir}/eval", f"detect={crops}"],
                run_dir.with_suffix(".eval.log"))  # fmt: skip
            if name == "all":  # whole press photos, never trained on: the largest face of each
                press = dev / "faces-reals/press-sports/real"
                run([sys.executable, "-m", "fakeface.evaluate", f"classifier={run_dir}/classifier.ts",
                     "split=none", f"groups={{press-sports: {press}}}", "detect=true",
                     f"hydra.run.dir={run_dir}/press"], run_dir.with_suffix(".press.log"))  # fmt: skip
            report = json.loads((run_dir / "eval" / "report.json").read_text())
            row = {
                "recipe": recipe, "run": name, "seed": seed, "train_s": round(train_s),
                "test": {k: report["metrics"][k] for k in ("roc_auc", "accuracy", "ece")},
                "groups": report["groups"],
            }  # fmt: skip
            with (out / "results.jsonl").open("a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main(dict(a.split("=", 1) for a in sys.argv[1:]))
