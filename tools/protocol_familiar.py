"""The unfamiliar-photo signal (fakeface.familiar) measured inside the trust protocol's runs.

    python tools/protocol_familiar.py out=outputs/protocol [features=data/familiar]

For every run of tools/protocol.py: the reference is the face features of that run's training
split, the threshold the 95 % quantile of its validation split's distances (as
tools/familiarity.py fits the released model's); then how often the signal fires on the run's
test split (in-distribution), on each left-out generator and each left-out real source, and on
the left-out real photos that the run's model calls fake or unsure (p_fake >= 0.164, the
released model's unsure edge). The features are the ImageNet EfficientNet-Lite0 features of
the largest face that tools/familiarity.py caches per folder (<features>/<folder>.npz):
photos not in that cache (no face found, or a folder never measured) are left out.
Writes <out>/familiar.md and prints it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from protocol_report import load  # noqa: E402

UNSURE_EDGE = 0.164  # the released model's unsure band starts here (docs/model_card.md)


def feature_table(store: Path) -> dict[str, np.ndarray]:
    """path -> feature row, from every cached folder."""
    table = {}
    for npz in sorted(store.glob("*.npz")):
        with np.load(npz, allow_pickle=False) as f:
            if "features" in f.files:
                table.update(zip(f["paths"].tolist(), f["features"], strict=True))
    return table


def run_rates(
    run_dir: Path, scored: pd.DataFrame, table: dict[str, np.ndarray]
) -> list[dict]:  # fmt: skip
    """One run: its own reference (training split) and threshold (validation split), then how
    often the signal fires on its test split and on each held-out group of `scored`."""
    from fakeface.familiar import Familiarity

    split = pd.read_csv(run_dir / "split.csv")
    split = split[split["image_path"].isin(table.keys())]

    def feats(paths: pd.Series) -> np.ndarray:
        return np.stack([table[p] for p in paths])

    part = {
        name: split.loc[split["split"] == name, "image_path"] for name in ("train", "valid", "test")
    }
    familiar = Familiarity.fit(feats(part["train"]), feats(part["valid"]))
    rows = [{"group": "test split (in-distribution)", "photos": len(part["test"]),
             "unfamiliar": float((familiar.novelty(feats(part["test"])) > 1).mean())}]  # fmt: skip
    for group, held in scored[scored["held_out"]].groupby("group", sort=False):
        known = held[held["image_path"].isin(table.keys())]
        if known.empty:
            continue
        fired = familiar.novelty(feats(known["image_path"])) > 1
        doubtful = (known["p_fake"] >= UNSURE_EDGE).to_numpy()
        rows.append({"group": group, "photos": len(known), "unfamiliar": float(fired.mean()),
                     "among_fake_or_unsure": float(fired[doubtful].mean()) if doubtful.any()
                     else float("nan"), "fake_or_unsure": float(doubtful.mean())})  # fmt: skip
    return rows


def main(args: dict[str, str]) -> None:
    out = Path(args.get("out", "outputs/protocol"))
    table = feature_table(Path(args.get("features", "data/familiar")))
    rows = []
    data = load(out)  # every scored image of every run (tools/protocol_report.py)
    for (recipe, run, seed), scored in data[data["run"] != "all"].groupby(
        ["recipe", "run", "seed"], sort=False
    ):
        for row in run_rates(out / recipe / f"{run}_s{seed}", scored, table):
            rows.append({"recipe": recipe, "run": run, "seed": seed, **row})
    frame = pd.DataFrame(rows)
    lines = ["| recipe | group | runs | photos per run | fires on | fires among those called fake "
             "or unsure (share of the group called so) |", "|---|---|---|---|---|---|"]  # fmt: skip
    for (recipe, group), g in frame.groupby(["recipe", "group"], sort=False):
        among = g["among_fake_or_unsure"].mean() if "among_fake_or_unsure" in g else float("nan")
        doubt = g["fake_or_unsure"].mean() if "fake_or_unsure" in g else float("nan")
        lines.append(f"| {recipe} | {group} | {len(g)} | {g['photos'].mean():.0f} | "
                     f"{g['unfamiliar'].mean():.1%} ({g['unfamiliar'].min():.1%}-"
                     f"{g['unfamiliar'].max():.1%}) | "
                     + ("" if np.isnan(among) else f"{among:.1%} ({doubt:.1%})") + " |")  # fmt: skip
    text = "\n".join(["# The unfamiliar signal in the protocol's runs", "", *lines]) + "\n"
    (out / "familiar.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main(dict(a.split("=", 1) for a in sys.argv[1:]))
