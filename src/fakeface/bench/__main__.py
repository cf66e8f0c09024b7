"""Benchmarks: python -m fakeface.bench [sections=[data,train,export,dcgan,realtime]]

Prints a table and writes bench.json (with the machine's facts) into the run directory; the
sections are run by `fakeface.bench.suite`, one module per section in this package.
"""

from __future__ import annotations

from omegaconf import DictConfig

from fakeface.bench.suite import bench
from fakeface.cli import hydra_main


@hydra_main("bench")
def main(cfg: DictConfig) -> None:
    """CLI: run the chosen sections, print the table, write bench.json into the run directory."""
    bench(cfg)


if __name__ == "__main__":
    main()
