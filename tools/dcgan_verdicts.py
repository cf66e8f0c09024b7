"""Does the detector catch the GAN's faces? Verdict shares and ROC-AUC from two predictions files.

    python -m fakeface.predict input=<generated PNGs> out=<a>      # the released detector
    python -m fakeface.predict input=<held-back real crops> out=<b>
    python tools/dcgan_verdicts.py <a>/predictions.csv <b>/predictions.csv [--out verdicts.json]

Both sets should be cut and sized alike (the GAN's 64-px face crops against real face crops
resized to 64 px by tools/face_crops.py), so that size and framing tell the detector nothing.
The ROC-AUC takes p_fake as the score, the generated faces as the positives.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def shares(frame) -> dict[str, float]:  # noqa: ANN001 (a pandas DataFrame)
    counts = frame["verdict"].value_counts()
    return {v: float(counts.get(v, 0) / len(frame)) for v in ("fake", "unsure", "real")}


def main(argv: list[str] | None = None) -> int:
    import pandas as pd
    import torch
    from torchmetrics.functional.classification import binary_auroc

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("generated", type=Path, help="predictions.csv of the generated faces")
    parser.add_argument("real", type=Path, help="predictions.csv of held-back real faces")
    parser.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    fake, real = (pd.read_csv(p).dropna(subset=["p_fake"]) for p in (args.generated, args.real))
    scores = torch.tensor(pd.concat([fake["p_fake"], real["p_fake"]]).to_numpy())
    labels = torch.tensor([1] * len(fake) + [0] * len(real))
    result = {
        "n_generated": len(fake),
        "n_real": len(real),
        "generated": shares(fake),
        "real": shares(real),
        "p_fake_mean_generated": float(fake["p_fake"].mean()),
        "p_fake_mean_real": float(real["p_fake"].mean()),
        "roc_auc": float(binary_auroc(scores, labels)),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
