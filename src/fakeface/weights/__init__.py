"""The released model: package data, installed by pip with the code (docs/model_card.md)."""

from pathlib import Path

# TorchScript, with its contract, training data and operating point inside (fakeface.json)
RELEASED = Path(__file__).resolve().parent / "classifier.ts"
