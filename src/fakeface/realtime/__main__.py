"""Real-time fake-face detection on a camera, a video file or a folder of images.

python -m fakeface.realtime classifier=classifier.ts source=0        # webcam, window, q/Esc quits
python -m fakeface.realtime classifier=classifier.ts source=clip.mp4 display=false video=annotated.mp4
"""

from __future__ import annotations

from pathlib import Path

import cv2
import torch
from omegaconf import DictConfig, OmegaConf

from fakeface.cli import hydra_main
from fakeface.deploy.modelfile import load_classifier, precision_dtype
from fakeface.faces.detect import build_detector
from fakeface.realtime.stream import FrameSource, print_summary, run


@hydra_main("realtime")
def main(cfg: DictConfig) -> dict[str, float]:
    """CLI: build detector, model and source from the config, run, print the summary."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
        cv2.setNumThreads(cfg.threads)
    out = Path(cfg.out)
    model, info = load_classifier(cfg.classifier, cfg.device)
    summary = run(
        model,
        info,
        FrameSource(cfg.source, retries=cfg.retries),
        build_detector(OmegaConf.to_container(cfg.detector), cfg.device),
        faces=cfg.faces,
        margin=cfg.margin,
        dtype=precision_dtype(cfg.precision, cfg.device),
        display=cfg.display,
        output=out / cfg.video if cfg.video else None,
        log=out / cfg.log if cfg.log else None,
        save_every=cfg.save_every,
        save_dir=out / "frames",
        max_frames=cfg.max_frames,
        redetect_every=cfg.redetect_every,
    )
    print_summary(summary)
    return {"fps": summary.fps, "frames": summary.frames, "faces": summary.faces}


if __name__ == "__main__":
    main()
