"""The detector's trust protocol on the development photo sets (docs/evaluation.md, "Trust").

Trains a recipe with generators and real sources left out of training, then scores what was left
out: ROC-AUC of each left-out generator against the run's test reals, and the share of each
left-out real source called fake. Every run is a plain `python -m fakeface.train` and
`python -m fakeface.evaluate`; this script only names the folders and gathers report.json.

    python tools/protocol.py dev_data=../shared/data out=outputs/protocol recipe=capture seeds=0,1,2
        [runs=lo_sg3_studio,lo_sd_web,...] [dcgan=data/dcgan-cpu] [extra="trainer.max_epochs=8"]
        [score_only=true]

Writes <out>/<recipe>/<run>_s<seed>/ (the training run, eval/ inside; the run trained on
everything also press/: press-sports' whole photos through detect=true) and <out>/results.jsonl.
A run evaluated before a held-out group was added scores it on rerunning, into eval_<group>/
(score_only=true: only that, no training). dcgan=<folder>: the DCGAN's faces in <folder>/fake and
64-px real crops in <folder>/real (tools/face_crops.py's heldout/real), both scored whole.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

Where = Callable[[str], Path]  # a folder name of the protocol -> its path on this machine

REALS = {  # left-out real source -> its folder under dev_data
    "studio-tw": "faces-reals/studio-tw/real",
    "web-mixed": "faces-reals/web-mixed/real",
    "film-imfdb": "faces-reals/film-imfdb/real",
    "utkface": "faces-xsrc/real",
    "news-lfw": "faces-reals/news-lfw/real",
    "fairface": "faces-reals/flickr-fairface/real",
}
GENERATORS = {"sg3": "faces-sg3/fake", "sd21": "faces-sd/fake", "sg2": "faces-xsrc/fake",
              "dcgan-cpu": "dcgan-cpu/fake"}  # fmt: skip
# 64-px real face crops cut as the DCGAN's training crops were (tools/face_crops.py's heldout/):
# the DCGAN's faces are ranked against these, so that size and framing tell the model nothing
DCGAN_REALS = {"dcgan-real": "dcgan-cpu/real"}
ALL = ["faces-dev", "faces-xsrc", "faces-sg3", "faces-sd", "faces-reals/studio-tw",
       "faces-reals/web-mixed", "faces-reals/film-imfdb"]  # fmt: skip
NEW_REALS = ["faces-reals/news-lfw", "faces-reals/flickr-fairface"]
DCGAN = "dcgan-cpu"  # <dcgan>/fake: the one-hour CPU DCGAN's 1,000 faces (docs/dcgan.md)

# run -> (folders left out of training, held-out groups scored). Each run leaves one generator and
# one or two real sources out at once (several questions per training run); a recipe's folders
# that a run does not leave out are trained on. "x/fake" leaves out one class of a folder. The
# DCGAN's faces are a held-out group wherever the recipe does not train on them.
RUNS = {
    "all": ((), {}),
    "lo_sg3_studio": (
        ("faces-sg3", "faces-reals/studio-tw", "faces-reals/news-lfw"),
        {"sg3": GENERATORS["sg3"], "studio-tw": REALS["studio-tw"], "news-lfw": REALS["news-lfw"]},
    ),
    "lo_sd_web": (
        ("faces-sd", "faces-reals/web-mixed", "faces-reals/flickr-fairface"),
        {
            "sd21": GENERATORS["sd21"],
            "web-mixed": REALS["web-mixed"],
            "fairface": REALS["fairface"],
        },
    ),
    "lo_sg2_film": (  # StyleGAN2 out: faces-dev and faces-xsrc keep only their reals
        ("faces-dev/fake", "faces-xsrc/fake", "faces-reals/film-imfdb"),
        {"sg2": GENERATORS["sg2"], "sg2-dev": "faces-dev/fake", "film-imfdb": REALS["film-imfdb"]},
    ),
    "lo_utk": (("faces-xsrc/real",), {"utkface": REALS["utkface"]}),
}
EMA = "callbacks.ema={_target_:fakeface.models.callbacks.EMAWeights,decay:0.99}"
# recipe -> (overrides on top of experiment=detector (which crops faces: data.face_crop), folders)
RECIPES = {
    "crop": ([], ALL),
    "wild": (["data.face_crop=null"], ALL),  # whole images, as stored
    "source": (["data.face_crop=null", "data.augment=source"], ALL),
    "cnn": (["experiment=detector_cnn"], ALL),
    # FFHQ's reals, the one real source from the generators' own domain, drawn 3x as often, and
    # plain studio-like backdrops drawn on both classes
    "ffhq3bg": (
        [
            "data.face_crop=null",
            "data.source_weights={FFHQ: 3}",
            "data.augment=flip+crop+jitter+light+background+resample+blur+jpeg",
        ],
        ALL,
    ),
    # issue 44: the released recipe + the DCGAN's faces as one more fake folder
    "crop_dcgan": ([], [*ALL, GENERATORS["dcgan-cpu"]]),
    # issue 43: every real source, the capture-chain augmentation, the weights' moving average
    "capture": (["data.augment=capture", EMA], [*ALL, *NEW_REALS]),
    # capture without FairFace's candid photos (LFW's news photos kept): on lo_sd_web, which
    # leaves FairFace out, it trains exactly what capture trains
    "camera": (["data.augment=capture", EMA], [*ALL, "faces-reals/news-lfw"]),
    # the released recipe + only the weights' moving average (capture's third change)
    "ema": ([EMA], ALL),
}


def training_folders(folders: list[str], left_out: tuple[str, ...]) -> list[str]:
    """`folders` without the left-out ones; a folder with one class left out keeps the other."""
    kept = []
    for folder in folders:
        if folder in left_out:
            continue
        gone = {lo.rsplit("/", 1)[1] for lo in left_out if lo.rsplit("/", 1)[0] == folder}
        kept += [f"{folder}/{c}" for c in ("fake", "real") if c not in gone] if gone else [folder]
    return kept


def held_out(run: str, recipe: str) -> dict[str, str]:
    """The groups `run` scores for `recipe`: its left-out sources, the DCGAN's faces unless the
    recipe trains on them, and the 64-px real crops they are ranked against."""
    groups = dict(RUNS[run][1])
    if run != "all":
        if GENERATORS["dcgan-cpu"] not in RECIPES[recipe][1]:
            groups["dcgan-cpu"] = GENERATORS["dcgan-cpu"]
        groups |= DCGAN_REALS
    return groups


def recipe_overrides(recipe: str, folders: list[str]) -> list[str]:
    """The recipe's overrides; FFHQ names faces-dev's folder as this run's data names it."""
    ffhq = "faces-dev" if "faces-dev" in folders else "faces-dev/real"
    return [o.replace("FFHQ", ffhq) for o in RECIPES[recipe][0]]


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
    dcgan = Path(args.get("dcgan", "data/dcgan-cpu")).resolve()  # <folder>/fake: its faces
    recipe = args.get("recipe", "crop")
    extra = args.get("extra", "").split()

    def where(folder: str) -> Path:
        return (
            dcgan / folder.removeprefix(DCGAN + "/") if folder.startswith(DCGAN) else dev / folder
        )

    for seed in [int(s) for s in args.get("seeds", "0").split(",")]:
        for name in args.get("runs", ",".join(RUNS)).split(","):
            folders = training_folders(RECIPES[recipe][1], RUNS[name][0])
            groups = {k: v for k, v in held_out(name, recipe).items() if where(v).is_dir()}
            run_dir = out / recipe / f"{name}_s{seed}"
            report_file = run_dir / "eval" / "report.json"
            overrides = recipe_overrides(recipe, folders)
            experiment = [o for o in overrides if o.startswith("experiment=")]
            # a model trained on face crops is scored on the same crops (predict detect=true)
            crops = "data.face_crop=null" not in overrides and not experiment
            if report_file.is_file():  # done before: rerunning the script resumes
                score_missing(run_dir, groups, where, crops)
                continue
            if args.get("score_only") == "true":  # only the groups missing from finished runs
                continue
            roots = ",".join(str(where(f)) for f in folders)
            start = time.time()
            run([sys.executable, "-m", "fakeface.train", *(experiment or ["experiment=detector"]),
                 "data=devsets", f"data.root=[{roots}]", f"seed={seed}", f"data.split_seed={seed}",
                 f"hydra.run.dir={run_dir}", "logger=null",
                 *[o for o in overrides if o not in experiment], *extra],
                run_dir.with_suffix(".train.log"))  # fmt: skip
            train_s = time.time() - start
            photos = {k: v for k, v in groups.items() if not v.startswith(DCGAN)}
            evaluate(run_dir, photos, where, crops, "eval", split="test")
            score_missing(run_dir, groups, where, crops)
            if name == "all":  # whole press photos, never trained on: the largest face of each
                press = dev / "faces-reals/press-sports/real"
                run([sys.executable, "-m", "fakeface.evaluate", f"classifier={run_dir}/classifier.ts",
                     "split=none", f"groups={{press-sports: {press}}}", "detect=true",
                     f"hydra.run.dir={run_dir}/press"], run_dir.with_suffix(".press.log"))  # fmt: skip
            report = json.loads(report_file.read_text())
            row = {
                "recipe": recipe, "run": name, "seed": seed, "train_s": round(train_s),
                "test": {k: report["metrics"][k] for k in ("roc_auc", "accuracy", "ece")},
                "groups": report["groups"],
            }  # fmt: skip
            with (out / "results.jsonl").open("a") as f:
                f.write(json.dumps(row) + "\n")


def score_missing(run_dir: Path, groups: dict[str, str], where: Where, crops: bool) -> None:
    """Score the held-out groups no eval*/ folder of the run has scored yet (added later, or
    the DCGAN's faces: already 64-px face crops, scored whole, not through the face finder)."""
    scored = {g["group"] for f in run_dir.glob("eval*/report.json")
              for g in json.loads(f.read_text())["groups"]}  # fmt: skip
    missing = {k: v for k, v in groups.items() if k not in scored}
    for whole in (False, True):
        part = {k: v for k, v in missing.items() if v.startswith(DCGAN) == whole}
        if part:
            evaluate(run_dir, part, where, crops and not whole, f"eval_{'_'.join(sorted(part))}")


def evaluate(run_dir: Path, groups: dict[str, str], where: Where, crops: bool, into: str,
             split: str = "none") -> None:  # fmt: skip
    """Score the run's classifier on `groups` (and its own test split with split=test)."""
    listed = ",".join(f"{k}: {where(v)}" for k, v in groups.items())
    split_args = ["data=folder", f"data.split_file={run_dir}/split.csv"] if split != "none" else []
    run([sys.executable, "-m", "fakeface.evaluate", f"classifier={run_dir}/classifier.ts",
         *split_args, f"split={split}", f"groups={{{listed}}}", f"hydra.run.dir={run_dir}/{into}",
         f"detect={crops}"], run_dir / f"{into}.log")  # fmt: skip


if __name__ == "__main__":
    main(dict(a.split("=", 1) for a in sys.argv[1:]))
