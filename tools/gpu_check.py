"""Measure every GPU route in one run and write one JSON.

    python tools/gpu_check.py                      # on a CUDA machine: gpu_check.json
    python tools/gpu_check.py --dry --out x.json   # the same commands, tiny, on any machine

Each step is a fakeface command line, timed as a whole; a failing step is recorded (its exit
status and the end of its log) and the run goes on, so one broken route does not cost the others'
numbers. The steps, in order of what a short GPU loan should measure first:

1. data: the synthetic set (256-px JPEGs) hard-linked into a 140k-sized folder (100k/10k/10k);
2. cache: `fakeface.data.cache` with one decoding worker per core (the decoded-cache build);
3. train: one fit per training route, device-resident batches: batch 32 eager, batch 32 with
   `model.compile=cuda-graphs`, batch 256 in steps of 32 with `reduce-overhead` and with
   `cuda-graphs` (images/s from each run's metrics.json);
4. bench: `fakeface.bench sections=[export,dcgan]`: one-image latency fp32 / bf16, batched
   throughput and the DCGAN step rate (its bench.json rows).

`--dry` runs the same steps with a few images and batches, so a CPU test keeps this script from
rotting (tests/test_gpu_check.py); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

# "size": the image size the models train and run at (--dry: 32 px, a sixteenth of the work)
FULL = {
    "source": (2000, 200, 200),
    "linked": (100_000, 10_000, 10_000),
    "epochs": 2,
    "limit": 1.0,
    "size": 128,
}
DRY = {"source": (64, 16, 16), "linked": (64, 16, 16), "epochs": 1, "limit": 2, "size": 32}
# route -> (batch size, step batch size or None, compile mode or None); --dry divides sizes by 8
ROUTES = {
    "batch32": (32, None, None),
    "batch32-cuda-graphs": (32, None, "cuda-graphs"),
    "split256x32-reduce-overhead": (256, 32, "reduce-overhead"),
    "split256x32-cuda-graphs": (256, 32, "cuda-graphs"),
}


def route_overrides(
    batch: int, step: int | None, compile_mode: str | None, shrink: int
) -> list[str]:
    """The training overrides of one route, its batch sizes divided by `shrink`."""
    out = [f"data.batch_size={batch // shrink}"]
    if step:
        out.append(f"model.step_batch_size={step // shrink}")
    if compile_mode:
        out.append(f"model.compile={compile_mode}")
    return out


def run(name: str, argv: list[str], work: Path, results: dict) -> bool:
    """Run `python -m fakeface.<argv>` in `work`; record its wall time and, on failure, its log."""
    start = time.perf_counter()
    done = execute([sys.executable, "-m", *argv], work)
    entry = {
        "command": " ".join(["python -m", *argv]),
        "wall_s": round(time.perf_counter() - start, 2),
    }
    entry["returncode"] = done.returncode
    if done.returncode:
        entry["log_tail"] = (done.stdout + done.stderr)[-3000:]
    results[name] = entry
    print(f"{name}: exit {done.returncode} in {entry['wall_s']} s", flush=True)
    return done.returncode == 0


def execute(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """One step's process (the CPU test swaps in its fork server, which starts commands faster)."""
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True)


def link_folder(source: Path, target: Path, counts: tuple[int, int, int]) -> int:
    """Hard-link the source split's images round-robin into train/valid/test of `counts` images."""
    images = {name: sorted((source / "train" / name).glob("*.jpg")) for name in ("fake", "real")}
    for split, count in zip(("train", "valid", "test"), counts, strict=True):
        for name, files in images.items():
            folder = target / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count // 2):
                link = folder / f"{i:06d}.jpg"
                if not link.exists():
                    os.link(files[i % len(files)], link)
    return sum(counts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="gpu_check.json", help="the JSON to write")
    parser.add_argument("--work", default="gpu_check_work", help="folder for data and runs")
    parser.add_argument("--dry", action="store_true", help="a few images: checks the commands")
    args = parser.parse_args(argv)
    size = DRY if args.dry else FULL
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"dry": args.dry, "machine": machine()}

    n_train, n_valid, n_test = size["source"]
    counts = [f"data.synthetic.n_train={n_train}", f"data.synthetic.n_valid={n_valid}"]
    counts += [f"data.synthetic.n_test={n_test}", "data.synthetic.image_size=256"]
    if not run("synthetic", ["fakeface.data.synthetic", *counts], work, results):
        return write(results, args.out)
    root = work / "linked"
    results["data"] = {
        "images": link_folder(work / "data" / "synthetic-256px", root, size["linked"])
    }

    workers = os.cpu_count() or 1
    run(
        "cache",
        [
            "fakeface.data.cache",
            f"data.root={root}",
            f"data.num_workers={workers}",
            f"data.image_size={size['size']}",
        ],  # fmt: skip
        work,
        results,
    )
    for route, (batch, step, compile_mode) in ROUTES.items():
        overrides = route_overrides(batch, step, compile_mode, 8 if args.dry else 1)
        train = [
            "fakeface.train", "experiment=cnn", f"data.root={root}", "data.device_resident=true",
            f"trainer.max_epochs={size['epochs']}", f"trainer.limit_train_batches={size['limit']}",
            f"data.image_size={size['size']}",
            "trainer.limit_val_batches=2", "test=false", "export=false", "calibrate=false",
            f"hydra.run.dir={work / 'runs' / route}", *overrides,
        ]  # fmt: skip
        if run(f"train {route}", train, work, results):
            metrics = json.loads((work / "runs" / route / "metrics.json").read_text())
            results[f"train {route}"]["train_images_per_s"] = metrics["train_images_per_s"]
    # the bench's data=synthetic256 is the set made in step 1 (the same counts: no regeneration)
    bench = [
        "fakeface.bench",
        "sections=[export,dcgan]",
        f"hydra.run.dir={work / 'bench'}",
        *counts,
        f"data.image_size={size['size']}",
    ]
    if args.dry:
        bench += ["bench.warmup=1", "bench.steps=2", "bench.repeats=2", "bench.predict_batch=8"]
        bench += ["data.batch_size=8", "bench.data_batches=2"]
    if run("bench", bench, work, results):
        results["bench"]["rows"] = json.loads((work / "bench" / "bench.json").read_text())[
            "results"
        ]
    write(results, args.out)


def machine() -> dict:
    """The GPU (nvidia-smi's line, if any), the CPU count and the Python/platform versions."""
    smi = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
        capture_output=True, text=True,
    ) if shutil.which("nvidia-smi") else None  # fmt: skip
    gpu = smi.stdout.strip() if smi and smi.returncode == 0 else None
    return {"gpu": gpu, "cpus": os.cpu_count(), "python": platform.python_version()}


def write(results: dict, out: str) -> None:
    Path(out).write_text(json.dumps(results, indent=2))
    failed = [
        name
        for name, entry in results.items()
        if isinstance(entry, dict) and entry.get("returncode")
    ]
    print(f"wrote {out}; failed steps: {failed or 'none'}")


if __name__ == "__main__":
    main()
