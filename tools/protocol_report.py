"""Tables and the operating point from tools/protocol.py's runs (docs/evaluation.md, "Trust").

    python tools/protocol_report.py out=outputs/protocol [target=0.05]

For each recipe: every left-out generator's ROC-AUC against the run's own test reals (mean and
the worst real source), the share of each left-out real source called fake at 0.5 and at the
recipe's threshold, in-source scores of the run trained on everything, and the threshold: the
lowest p_fake that keeps every left-out real source at or under `target` called fake. Because
that threshold is fitted on the left-out sources themselves, each source is also scored at the
threshold fitted on the *other* left-out sources (what a new real source can expect).
Writes <out>/report.md and <out>/operating_point.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torchmetrics.functional.classification import binary_auroc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from protocol import DCGAN_REALS, GENERATORS, REALS, held_out  # noqa: E402


def auroc(fake: np.ndarray, real: np.ndarray) -> float:
    p = torch.tensor(np.concatenate([fake, real]))
    y = torch.tensor([1] * len(fake) + [0] * len(real))
    return float(binary_auroc(p, y))


def ece(p: np.ndarray, fake: np.ndarray, bins: int = 15) -> float:
    """Top-label expected calibration error, equal-width bins (as fakeface.evaluate)."""
    confidence = np.maximum(p, 1 - p)
    correct = (p >= 0.5) == fake
    edges = np.linspace(0.5, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    return float(sum(abs(correct[which == b].mean() - confidence[which == b].mean())
                     * (which == b).mean() for b in range(bins) if (which == b).any()))  # fmt: skip


def load(out: Path) -> pd.DataFrame:
    """Every scored image of every run: recipe, run, seed, group, class, p_fake, held_out."""
    frames = []
    for line in (out / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        run_dir = out / r["recipe"] / f"{r['run']}_s{r['seed']}"
        # eval/: the test split and the held-out groups; eval_<groups>/: groups added later
        frame = pd.concat([pd.read_csv(f) for f in sorted(run_dir.glob("eval*/predictions.csv"))])
        no_face = frame["p_fake"].isna() & frame["error"].isna()  # detect=true: not scored
        if no_face.any():
            counts = frame[no_face].groupby("group").size().to_dict()
            print(f"{r['recipe']} {r['run']} s{r['seed']}: no face found {counts}")
        frame = frame.dropna(subset=["p_fake"])
        held = set(held_out(r["run"], r["recipe"]))
        frames.append(frame.assign(recipe=r["recipe"], run=r["run"], seed=r["seed"],
                                   held_out=frame["group"].isin(held)))  # fmt: skip
        press = run_dir / "press" / "predictions.csv"
        if press.is_file():  # never trained on: a left-out real source of the run on everything
            frame = pd.read_csv(press).dropna(subset=["p_fake"])
            frames.append(frame.assign(recipe=r["recipe"], run=r["run"], seed=r["seed"],
                                       held_out=True))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def variant_held_out(run: str, recipe: str) -> dict[str, str]:
    """held_out for a recipe or a variant of it scored by tools/clip_probe.py ("<recipe>: <variant>")."""
    return held_out(run, recipe.split(":")[0])


def recipe_tables(data: pd.DataFrame, target: float) -> tuple[list[str], dict]:
    lines = []
    # Left-out generators, against the test reals of the sources the run trained on.
    gen_rows = []
    for (run, seed), d in data[data["run"] != "all"].groupby(["run", "seed"]):
        reals = d[(d["class_name"] == "real") & ~d["held_out"]]
        for gen in [
            g
            for g in variant_held_out(run, d["recipe"].iloc[0])
            if g in GENERATORS or g == "sg2-dev"
        ]:
            p = d.loc[(d["group"] == gen) & (d["class_name"] == "fake"), "p_fake"].to_numpy()
            if not len(p):
                continue
            per_source = [auroc(p, r["p_fake"].to_numpy()) for _, r in reals.groupby("group")]
            gen_rows.append({"generator": gen, "seed": seed, "auc": auroc(p, reals["p_fake"].to_numpy()),
                             "worst_source_auc": min(per_source), "caught@0.5": (p >= 0.5).mean(),
                             "p": p})  # fmt: skip
    # Left-out real sources: p_fake of each.
    held_reals = {}
    for (run, seed), d in data[data["run"] != "all"].groupby(["run", "seed"]):
        for src in [g for g in variant_held_out(run, d["recipe"].iloc[0]) if g in REALS]:
            p = d.loc[d["group"] == src, "p_fake"].to_numpy()
            if len(p):  # (a group added to the protocol after this run is scored on rerunning)
                held_reals[(src, seed)] = p
    seeds = sorted({s for _, s in held_reals})
    # The threshold: every left-out source <= target called fake (per seed, then the max).
    thresholds = {s: max(np.quantile(p, 1 - target) for (src, ss), p in held_reals.items() if ss == s)
                  for s in seeds}  # fmt: skip
    threshold = float(max(thresholds.values())) if thresholds else 0.5
    lines += ["| left-out generator | seeds | ROC-AUC mean (min) | worst real source AUC | "
              f"caught at 0.5 | caught at {threshold:.2f} |", "|---|---|---|---|---|---|"]  # fmt: skip
    for gen, rows in (
        pd.DataFrame(gen_rows or [{"generator": None}]).dropna().groupby("generator", sort=False)
    ):
        caught = np.mean([(r >= threshold).mean() for r in rows["p"]])
        lines.append(f"| {gen} | {len(rows)} | {rows['auc'].mean():.3f} ({rows['auc'].min():.3f}) | "
                     f"{rows['worst_source_auc'].mean():.3f} | {rows['caught@0.5'].mean():.1%} | {caught:.1%} |")  # fmt: skip
    lines += ["", "| left-out real source | seeds | called fake at 0.5 | at the threshold | "
              "at the threshold fitted without it | p_fake p95 |", "|---|---|---|---|---|---|"]  # fmt: skip
    for src in REALS:
        mine = [(s, p) for (g, s), p in held_reals.items() if g == src]
        if not mine:
            continue
        loo = []
        for s, p in mine:
            others = [
                np.quantile(q, 1 - target)
                for (g, ss), q in held_reals.items()
                if ss == s and g != src
            ]
            loo.append((p >= (max(others) if others else 0.5)).mean())
        lines.append(
            f"| {src} | {len(mine)} | {np.mean([(p >= 0.5).mean() for _, p in mine]):.1%} | "
            f"{np.mean([(p >= threshold).mean() for _, p in mine]):.1%} | {np.mean(loo):.1%} | "
            f"{np.mean([np.quantile(p, 0.95) for _, p in mine]):.3f} |"
        )  # fmt: skip
    # Trained on everything: each generator and real source of the test split.
    lines += ["", "| trained on all, test split | n | ROC-AUC vs all test reals | called right at "
              f"0.5 | at {threshold:.2f} |", "|---|---|---|---|---|"]  # fmt: skip
    full = data[(data["run"] == "all") & ~data["held_out"]]
    for seed, press in data[(data["run"] == "all") & data["held_out"]].groupby("seed"):
        p = press["p_fake"].to_numpy()
        lines.append(f"| press-sports, never trained on, detect=true (seed {seed}) | {len(p)} | | "
                     f"{(p < 0.5).mean():.1%} | {(p < threshold).mean():.1%} |")  # fmt: skip
    summary = {}
    for seed, d in full.groupby("seed"):
        reals = d.loc[d["class_name"] == "real", "p_fake"].to_numpy()
        for (group, cls), g in d.groupby(["group", "class_name"]):
            p = g["p_fake"].to_numpy()
            auc = auroc(p, reals) if cls == "fake" else np.nan
            right = (p >= 0.5) if cls == "fake" else (p < 0.5)
            right_t = (p >= threshold) if cls == "fake" else (p < threshold)
            lines.append(f"| {group} {cls} (seed {seed}) | {len(p)} | {auc:.3f} | {right.mean():.1%} | {right_t.mean():.1%} |")  # fmt: skip
        is_fake = (d["class_name"] == "fake").to_numpy()
        summary[int(seed)] = {"auc": auroc(d.loc[is_fake, "p_fake"].to_numpy(), reals),
                              "ece": ece(d["p_fake"].to_numpy(), is_fake)}  # fmt: skip
        lines.append(f"| all (seed {seed}) | {len(d)} | {summary[int(seed)]['auc']:.3f} | ECE {summary[int(seed)]['ece']:.3f} | |")  # fmt: skip
    # The unsure band's low edge: 90 % of the test reals of the run on everything lie below it.
    known_reals = full.loc[full["class_name"] == "real", "p_fake"].to_numpy()
    low = min(float(np.quantile(known_reals, 0.9)), threshold) if len(known_reals) else threshold
    lines += ["", f"Verdicts with the threshold {threshold:.3f} and the unsure band [{low:.3f}, "
              f"{threshold:.3f}):", "", "| photos | real | unsure | fake |", "|---|---|---|---|"]  # fmt: skip
    zones = {
        "test reals, sources trained on": known_reals,
        "test fakes, generators trained on": full.loc[full["class_name"] == "fake", "p_fake"].to_numpy(),
        "left-out generators": np.concatenate([r for r in pd.DataFrame(gen_rows)["p"]]) if gen_rows else np.array([]),
        "left-out real sources": np.concatenate(list(held_reals.values())) if held_reals else np.array([]),
    }  # fmt: skip
    for name, p in zones.items():
        if len(p):
            lines.append(f"| {name} ({len(p)}) | {(p < low).mean():.1%} | "
                         f"{((p >= low) & (p < threshold)).mean():.1%} | {(p >= threshold).mean():.1%} |")  # fmt: skip
    return lines, {"threshold": threshold, "unsure": [low, threshold], "per_seed": thresholds,
                   "target": target, "trained_on_all": summary}  # fmt: skip


def spread_table(data: pd.DataFrame, threshold: float) -> list[str]:
    """Every recipe side by side, per left-out generator and real source (and run): the mean
    over seeds, the worst seed and the spread (max - min), the seeds' own numbers in brackets.
    The DCGAN's faces are ranked against the 64-px real crops (dcgan-real), not the test reals."""
    rows = []
    for (recipe, run, seed), d in data[data["run"] != "all"].groupby(["recipe", "run", "seed"]):
        reals = d.loc[(d["class_name"] == "real") & ~d["held_out"], "p_fake"].to_numpy()
        small = d.loc[d["group"] == "dcgan-real", "p_fake"].to_numpy()  # 64-px real crops
        test = d[~d["held_out"]]  # the run's own test split: sources and generators trained on
        fakes = test.loc[test["class_name"] == "fake", "p_fake"].to_numpy()
        rows += [{"recipe": recipe, "what": f"test split ({run}): ROC-AUC", "seed": seed,
                  "value": auroc(fakes, reals), "worst": min},
                 {"recipe": recipe, "what": f"test split ({run}): fakes caught at {threshold:.3f}",
                  "seed": seed, "value": (fakes >= threshold).mean(), "worst": min},
                 {"recipe": recipe, "what": f"test split ({run}): reals called fake at "
                  f"{threshold:.3f}", "seed": seed, "value": (reals >= threshold).mean(),
                  "worst": max}]  # fmt: skip
        groups = list(variant_held_out(run, recipe))
        if "dcgan-cpu/fake" in set(d["group"]):  # the DCGAN trained on: its test split
            groups.append("dcgan-cpu/fake")
        for group in groups:
            p = d.loc[d["group"] == group, "p_fake"].to_numpy()
            if not len(p):
                continue
            what = f"{group} ({run})"
            if group in REALS or group in DCGAN_REALS:
                rows += [{"recipe": recipe, "what": f"{what}: called fake at 0.5", "seed": seed,
                          "value": (p >= 0.5).mean(), "worst": max},
                         {"recipe": recipe, "what": f"{what}: called fake at {threshold:.3f}",
                          "seed": seed, "value": (p >= threshold).mean(), "worst": max}]  # fmt: skip
            else:  # the DCGAN's 64-px faces against 64-px real crops, the others the test reals
                against = small if group.startswith("dcgan-cpu") and len(small) else reals
                rows.append({"recipe": recipe, "what": f"{what}: ROC-AUC", "seed": seed,
                             "value": auroc(p, against), "worst": min})  # fmt: skip
    if not rows:
        return []
    table = pd.DataFrame(rows)
    recipes = list(dict.fromkeys(table["recipe"]))
    lines = ["| left out | " + " | ".join(f"`{r}` mean, worst, spread (seeds)" for r in recipes) + " |",
             "|---|" + "---|" * len(recipes)]  # fmt: skip
    for what, w in table.groupby("what", sort=True):
        cells = []
        for recipe in recipes:
            v = w.loc[w["recipe"] == recipe].sort_values("seed")
            if v.empty:
                cells.append("")
                continue
            x, worst = v["value"].to_numpy(), v["worst"].iloc[0]
            pct = "ROC-AUC" not in what
            f = (lambda y: f"{100 * y:.1f}") if pct else (lambda y: f"{y:.3f}")  # noqa: E731
            cells.append(f"{f(x.mean())}, {f(worst(x))}, {f(x.max() - x.min())} "
                         f"({' / '.join(f(y) for y in x)})")  # fmt: skip
        lines.append(
            f"| {what}{' (%)' if 'ROC-AUC' not in what else ''} | " + " | ".join(cells) + " |"
        )
    return lines


def _first_number(text: str) -> tuple[int, str]:
    """Sort key: age groups by their first number (0-2, 3-9, 10-19, ..., 70+), then by name."""
    digits = "".join(c if c.isdigit() else " " for c in text).split()
    return (int(digits[0]) if digits else 0, text)


def age_gender_table(data: pd.DataFrame, labels: Path, threshold: float) -> list[str]:
    """FairFace left out: the share called fake at 0.5 and at `threshold` per age group and gender."""
    if not labels.is_file():
        return []
    groups = pd.read_csv(labels).set_index("file")
    d = data[(data["group"] == "fairface") & data["held_out"]].copy()
    if d.empty:
        return []
    d["file"] = d["image_path"].map(lambda p: Path(p).name)
    d = d.join(groups, on="file")
    lines = ["| recipe | group | n (per seed) | called fake at 0.5 | at " + f"{threshold:.3f}"
             + " |", "|---|---|---|---|---|"]  # fmt: skip
    for recipe, r in d.groupby("recipe", sort=False):
        seeds = r["seed"].nunique()
        for key in ("age", "gender"):
            parts = sorted(r.groupby(key), key=lambda kv: _first_number(str(kv[0])))
            for value, g in [("all", r), *parts] if key == "age" else parts:
                p = g["p_fake"].to_numpy()
                lines.append(f"| {recipe} | {value} | {len(p) // seeds} | {(p >= 0.5).mean():.1%} | "
                             f"{(p >= threshold).mean():.1%} |")  # fmt: skip
    return lines


def main(args: dict[str, str]) -> None:
    out = Path(args.get("out", "outputs/protocol"))
    target = float(args.get("target", 0.05))
    data = load(out)
    report, points = ["# Trust protocol", ""], {}
    for recipe, d in data.groupby("recipe", sort=False):
        lines, point = recipe_tables(d, target)
        report += [f"## recipe `{recipe}`", "", *lines, "",
                   f"Threshold for <= {target:.0%} of every left-out real source called fake: "
                   f"{point['threshold']:.3f}", ""]  # fmt: skip
        points[recipe] = point
    fixed = float(args.get("threshold", 0.963))  # the released model's threshold
    report += ["## Recipes over seeds", "", f"Left-out generators: ROC-AUC against the run's test "
               "reals (worst: the lowest seed). Left-out real sources: the share called fake "
               f"(worst: the highest seed), at 0.5 and at {fixed}.", "",
               *spread_table(data, fixed), ""]  # fmt: skip
    labels = Path(args.get("dev_data", "../shared/data")) / "faces-reals/flickr-fairface/labels.csv"
    if ages := age_gender_table(data, labels, fixed):
        report += [
            "## FairFace left out, by age group and gender (all seeds pooled)",
            "",
            *ages,
            "",
        ]
    (out / "report.md").write_text("\n".join(report) + "\n")
    (out / "operating_point.json").write_text(json.dumps(points, indent=2))
    print("\n".join(report))


if __name__ == "__main__":
    main(dict(a.split("=", 1) for a in sys.argv[1:]))
