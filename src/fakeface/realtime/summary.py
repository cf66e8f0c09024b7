"""RunSummary: what a real-time run did (counts, per-stage latency, frame rate), and its report."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

STAGES = ("read", "detect", "classify", "draw", "write")


@dataclass
class RunSummary:
    """What a run did: counts, per-stage latencies (ms) and the end-to-end frame rate."""

    frames: int = 0
    faces: int = 0
    frames_with_faces: int = 0
    labels: Counter = field(default_factory=Counter)
    latency_ms: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    seconds: float = 0.0
    stop_reason: str = ""
    unreadable: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def stage_stats(self) -> dict[str, tuple[float, float]]:
        """(mean, p95) latency in ms per stage, and for the whole frame (`total`)."""
        stats = {}
        rows = {
            **self.latency_ms,
            "total": [sum(v) for v in zip(*self.latency_ms.values(), strict=True)],
        }
        for stage, values in rows.items():
            arr = np.asarray(values) if values else np.zeros(1)
            stats[stage] = (float(arr.mean()), float(np.percentile(arr, 95)))
        return stats

    def add(self, entry: dict, latency: dict[str, float]) -> None:
        """Count one frame: its `frame_record` entry and its per-stage latency (ms)."""
        for stage, ms in latency.items():
            self.latency_ms[stage].append(ms)
        self.frames += 1
        self.faces += len(entry["faces"])
        self.frames_with_faces += bool(entry["faces"])
        self.labels.update(face["label"] for face in entry["faces"])


def print_summary(summary: RunSummary) -> None:
    """The end-of-run report: counts, per-stage latency (mean, p95) and frames per second."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="fakeface realtime", title_justify="left")
    table.add_column("stage")
    table.add_column("mean ms", justify="right")
    table.add_column("p95 ms", justify="right")
    for stage, (mean, p95) in summary.stage_stats().items():
        table.add_row(stage, f"{mean:.2f}", f"{p95:.2f}", end_section=stage == STAGES[-1])
    console = Console()
    console.print(table)
    labels = ", ".join(f"{name} {count}" for name, count in sorted(summary.labels.items())) or "-"
    console.print(
        f"frames {summary.frames} ({summary.frames_with_faces} with faces), faces {summary.faces} "
        f"({labels}), {summary.fps:.1f} FPS end to end over {summary.seconds:.1f} s; "
        f"stopped: {summary.stop_reason}"
    )
    if summary.unreadable:
        console.print(f"unreadable images skipped ({len(summary.unreadable)}):")
        for path in summary.unreadable:
            console.print(f"  {path}", markup=False)
