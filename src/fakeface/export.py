"""Export a trained classifier to TorchScript and/or ONNX with its contract inside.

    python -m fakeface.export ckpt=<cnn.ckpt>      # -> <run dir>/classifier.ts (or out=<folder>)
    python -m fakeface.export ckpt=<cnn.ckpt> "format=[ts,onnx,int8]" calib=<run>/split.csv
    python -m fakeface.export "members=[<a.ts>,<b.ts>,<c.ts>]"   # one file: their mean

The work is done by `fakeface.deploy.export` and `fakeface.deploy.formats`; this is the command line.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fakeface.cli import hydra_main
from fakeface.deploy.export import describe_training_data, export_ensemble, load_checkpoint
from fakeface.deploy.formats import FILES, describe, export_formats, parse_formats
from fakeface.deploy.modelfile import load_classifier
from fakeface.errors import ConfigError


def checkpoint_data(ckpt: str) -> dict:
    """The data settings a checkpoint was trained with (Lightning saves the DataModule's)."""
    import torch

    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    return dict(saved.get("datamodule_hyper_parameters", {}))


@hydra_main("export")
def main(cfg: DictConfig) -> list[str]:
    """CLI: export `cfg.ckpt` in each of `cfg.format` (or average `cfg.members`) into <out>/."""
    out = Path(cfg.out)
    formats = parse_formats(OmegaConf.to_container(cfg, resolve=True)["format"])
    if cfg.members and cfg.ckpt:
        raise ConfigError("give either ckpt=<cnn.ckpt> or members=[a.ts,b.ts], not both")
    if cfg.members:
        if formats != ["ts"]:
            raise ConfigError(f"format={formats}: an ensemble is written as TorchScript (ts) only")
        paths = [export_ensemble([str(m) for m in cfg.members], out / FILES["ts"])]
    elif cfg.ckpt:
        module = load_checkpoint(cfg.ckpt)
        written = export_formats(
            module,
            out,
            formats,
            calib=cfg.calib,
            calib_images=cfg.calib_images,
            source=Path(cfg.ckpt).resolve(),
            temperature=cfg.temperature,
            trained_on=describe_training_data(checkpoint_data(cfg.ckpt)),
            name=cfg.name or "",
            threshold=cfg.threshold,
            unsure=tuple(cfg.unsure or ()),
        )
        paths = list(written.values())
    else:
        raise ConfigError("give the checkpoint: python -m fakeface.export ckpt=<cnn.ckpt>")
    for path in paths:
        print(describe(path, load_classifier(path)[1]))
    return [str(path) for path in paths]


if __name__ == "__main__":
    main()
