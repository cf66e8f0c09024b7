"""Serve the page and the JSON API:

fakeface serve                         # http://127.0.0.1:8000 with the released model
fakeface serve classifier=<classifier.ts> port=8080 host=0.0.0.0
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf

from fakeface.cli import hydra_main
from fakeface.errors import ConfigError

log = logging.getLogger(__name__)


def build_app(cfg: DictConfig):  # noqa: ANN201 (a FastAPI app; fastapi is imported inside)
    """The app of a serve config: model, detector, limits."""
    from fakeface.deploy.modelfile import load_classifier, precision_dtype
    from fakeface.faces.detect import build_detector
    from fakeface.serve.analyse import Analyser, Limits
    from fakeface.serve.app import MB, create_app

    for key in ("max_file_mb", "max_request_mb", "max_megapixels", "max_faces"):
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"{key}={value!r}: use a positive number")
    model, info = load_classifier(cfg.classifier, "cpu")
    detector = build_detector(OmegaConf.to_container(cfg.detector), "cpu")
    analyser = Analyser(
        model, info, detector, margin=cfg.margin, dtype=precision_dtype(cfg.precision, "cpu"),
        tta=cfg.tta, max_faces=int(cfg.max_faces),
    )  # fmt: skip
    limits = Limits(int(cfg.max_file_mb * MB), int(cfg.max_megapixels * 1e6))
    return create_app(analyser, limits, int(cfg.max_request_mb * MB))


@hydra_main("serve")
def main(cfg: DictConfig) -> None:
    """CLI: build the app and run it with uvicorn until Ctrl-C."""
    import uvicorn

    app = build_app(cfg)
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("host=%s: the page and API are reachable from other machines", cfg.host)
    print(f"fakeface serve: open http://{cfg.host}:{cfg.port} (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")


if __name__ == "__main__":
    main()
