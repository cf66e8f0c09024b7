"""Export a trained classifier to TorchScript with its contract inside.

    python -m fakeface.export ckpt=<cnn.ckpt>      # -> <run dir>/classifier.ts (or out=<folder>)
    python -m fakeface.export "members=[<a.ts>,<b.ts>,<c.ts>]"   # one file: their mean

The work is done by `fakeface.deploy.export`; this module is the command line.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from fakeface.cli import hydra_main
from fakeface.deploy.export import export_checkpoint, export_ensemble
from fakeface.deploy.modelfile import load_classifier
from fakeface.errors import ConfigError


@hydra_main("export")
def main(cfg: DictConfig) -> str:
    """CLI: export `cfg.ckpt` (or average `cfg.members`) to <out>/classifier.ts."""
    out = Path(cfg.out) / "classifier.ts"
    if cfg.members and cfg.ckpt:
        raise ConfigError("give either ckpt=<cnn.ckpt> or members=[a.ts,b.ts], not both")
    if cfg.members:
        path = export_ensemble([str(m) for m in cfg.members], out)
    elif cfg.ckpt:
        path = export_checkpoint(cfg.ckpt, out, cfg.temperature)
    else:
        raise ConfigError("give the checkpoint: python -m fakeface.export ckpt=<cnn.ckpt>")
    _, info = load_classifier(path)
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {info.arch}, "
        f"{info.image_size}x{info.image_size} RGB in [0,1] -> {list(info.class_names)} probabilities"
        f", temperature {info.temperature:.3g}"
    )
    return str(path)


if __name__ == "__main__":
    main()
