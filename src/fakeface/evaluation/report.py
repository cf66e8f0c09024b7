"""The evaluation report: report.md from report.json's content, and the terminal summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fakeface.evaluation.metrics import HEADLINE

MAX_LISTED = 50  # unreadable files named in report.md (report.json lists them all)


def _number(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render_markdown(report: dict[str, Any]) -> str:
    """report.json's content as a human-readable markdown page (images linked relatively)."""
    lines = _header(report) + _metric_tables(report) + _group_tables(report)
    if report["robustness"]:
        lines += _robustness(report)
    if report.get("faces"):
        f = report["faces"]
        lines += ["", "## Faces (detect=true)", "",
                  f"A face was found in {f['with_face']} of {f['images']} readable images; "
                  "images without one were not scored.", "",
                  "| group | images | with a face |", "|---|---|---|"]  # fmt: skip
        lines += [f"| {g} | {c['images']} | {c['with_face']} |" for g, c in f["groups"].items()]
    if report["unreadable"]:
        lines += ["", "## Unreadable images (skipped)", ""]
        lines += [f"- `{u['path']}`: {u['reason']}" for u in report["unreadable"][:MAX_LISTED]]
        if len(report["unreadable"]) > MAX_LISTED:
            lines.append(f"- ... {len(report['unreadable']) - MAX_LISTED} more in report.json")
    return "\n".join(lines) + "\n"


def _header(report: dict[str, Any]) -> list[str]:
    m, data, thr = report["metrics"], report["data"], report["threshold"]
    positive, negative = m["classes"]
    how = (
        f"auto: best balanced accuracy {thr['val_balanced_accuracy']:.4f} on split "
        f"`{thr['val_split']}` ({thr['val_images']} images)"
        if thr["mode"] == "auto"
        else "fixed"
    )
    groups = data.get("groups") or {}
    return [
        f"# fakeface evaluation: `{Path(report['model']['path']).name}` on `{data['split']}`",
        "",
        f"- model: `{report['model']['path']}` ({report['model']['arch']}, "
        f"{report['model']['image_size']}x{report['model']['image_size']})",
        f"- data: `{data['root']}`, split `{data['split']}`"
        + (f" from `{data['split_file']}`" if data["split_file"] else "")
        + "".join(f"; group `{k}`: `{v}`" for k, v in groups.items())
        + f": {m['n']} images scored ({m['per_class'][positive]['support']} {positive}, "
        f"{m['per_class'][negative]['support']} {negative}), {len(report['unreadable'])} unreadable",
        f"- threshold: {thr['value']:.4g} ({how}); an image is called {positive} when "
        f"p_{positive} >= threshold",
        f"- precision {report['precision']}, TTA {'on (image + mirror)' if report['tta'] else 'off'}, "
        f"{report['images_per_s']:.0f} images/s (decoding, perturbations and model)",
    ]


def _metric_tables(report: dict[str, Any]) -> list[str]:
    m, cal = report["metrics"], report["calibration"]
    positive, negative = m["classes"]
    return [
        "",
        "| metric | value |",
        "|---|---|",
        f"| accuracy | {_number(m['accuracy'])} |",
        f"| balanced accuracy | {_number(m['balanced_accuracy'])} |",
        f"| ROC-AUC (positive: {positive}) | {_number(m['roc_auc'])} |",
        f"| average precision (positive: {positive}) | {_number(m['average_precision'])} |",
        f"| ECE ({report['ece_bins']} bins, top-label) | {_number(m['ece'])} |",
        f"| ECE without the file's temperature ({cal['temperature']:.3g}) "
        f"| {_number(cal['ece_uncalibrated'])} |",
        "",
        "| class | precision | recall | F1 | images |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {_number(c['precision'])} | {_number(c['recall'])} | {_number(c['f1'])} "
            f"| {c['support']} |"
            for name, c in m["per_class"].items()
        ),
        "",
        "Confusion matrix (rows: true class, columns: predicted class):",
        "",
        f"| | predicted {positive} | predicted {negative} |",
        "|---|---|---|",
        *(
            f"| {name} | {row[0]} | {row[1]} |"
            for name, row in zip(m["classes"], m["confusion_matrix"], strict=True)
        ),
        "",
        "![ROC](roc.png) ![reliability](reliability.png) ![confusion matrix](confusion.png)",
    ]


def _group_tables(report: dict[str, Any]) -> list[str]:
    """Per generator / real source, then per (generator, real source) pair."""
    groups, pairs = report.get("groups") or [], (report.get("pairs") or {}).get("clean") or []
    if not groups:
        return []
    lines = [
        "",
        "## Per generator and per real source",
        "",
        "A group's fakes are one generator, its reals one source. ROC-AUC ranks the group against "
        "every image of the other class; accuracy is the group's own (its class's recall); "
        "confidently wrong: a fake with p_fake < 0.2, a real with p_fake > 0.8.",
        "",
        "| group | class | images | ROC-AUC vs the other class | accuracy | ECE | mean p_fake "
        "| confidently wrong |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {g['group']} | {g['class']} | {g['n']} | {_number(g['roc_auc'])} "
            f"| {_number(g['accuracy'])} | {_number(g['ece'])} | {_number(g['mean_p_fake'])} "
            f"| {_number(g['confident_wrong'])} |"
            for g in groups
        ),
    ]
    if pairs:
        lines += ["", "| fakes (generator) | reals (source) | images | ROC-AUC | accuracy "
                  "| balanced acc. | ECE |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        lines += [
            f"| {r['fake']} | {r['real']} | {r['n']} | {_number(r['roc_auc'])} "
            f"| {_number(r['accuracy'])} | {_number(r['balanced_accuracy'])} | {_number(r['ece'])} |"
            for r in pairs
        ]
    return lines


def _robustness(report: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Robustness",
        "",
        "Each perturbation is applied to the decoded full-resolution image before the standard "
        f"resize to {report['model']['image_size']}; same threshold. `history:` variants re-store "
        "each class its own way: `real-jpeg` reals as JPEG q75 at 1024 px and fakes upsampled "
        "losslessly, `fake-jpeg` the swap, `lossless` both upsampled without JPEG.",
        "",
        "| perturbation | accuracy | balanced acc. | ROC-AUC | AP | ECE |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['perturbation']} | {_number(r['accuracy'])} | {_number(r['balanced_accuracy'])} "
            f"| {_number(r['roc_auc'])} | {_number(r['average_precision'])} | {_number(r['ece'])} |"
            for r in report["robustness"]
        ),
        "",
        "![robustness](robustness.png)",
    ]
    pairs = report.get("pairs") or {}
    if len(pairs) > 1 and pairs.get("clean"):
        variants = list(pairs)
        lines += ["", "ROC-AUC per (generator, real source) pair and variant:", "",
                  "| fakes | reals | " + " | ".join(variants) + " |",
                  "|---|---|" + "---|" * len(variants)]  # fmt: skip
        for i, r in enumerate(pairs["clean"]):
            cells = " | ".join(_number(pairs[v][i]["roc_auc"]) for v in variants)
            lines.append(f"| {r['fake']} | {r['real']} | {cells} |")
    return lines


def print_summary(report: dict[str, Any], out_dir: Path) -> None:
    """The headline metrics and the robustness table in the terminal (rich)."""
    m = report["metrics"]
    table = Table(
        title=f"fakeface evaluate: {report['data']['split']}, {m['n']} images", title_justify="left"
    )
    for column in ("accuracy", "balanced acc.", "ROC-AUC", "AP", "ECE", "threshold"):
        table.add_column(column, justify="right")
    table.add_row(*(_number(m[key]) for key in (*HEADLINE, "threshold")))
    console = Console()
    console.print(table)
    if report["robustness"]:
        sweep = Table(title="robustness", title_justify="left")
        for column in ("perturbation", "accuracy", "ROC-AUC"):
            sweep.add_column(column, justify="right")
        for row in report["robustness"]:
            sweep.add_row(row["perturbation"], _number(row["accuracy"]), _number(row["roc_auc"]))
        console.print(sweep)
    if report.get("faces"):
        f = report["faces"]
        console.print(
            f"detect=true: a face in {f['with_face']} of {f['images']} images "
            f"({f['images'] - f['with_face']} without one, not scored)"
        )
    for item in report["unreadable"][:10]:
        console.print(f"[red]unreadable[/red] {item['path']}: {item['reason']}", highlight=False)
    if len(report["unreadable"]) > 10:
        console.print(f"[red]unreadable[/red]: {len(report['unreadable'])} files in all")
    console.print(f"report: {out_dir / 'report.md'}", highlight=False)


# ---------------------------------------------------------------------------------------------
# Entry point
