"""Every `python -m fakeface...` command shown in README.md and docs/*.md composes its config.

Each command line is composed the way its entry point composes it (same config, same
overrides; Hydra's struct mode rejects a key that does not exist), so the docs cannot drift
from the code. `<placeholder>` values stand for the user's files; a -m sweep is checked at its
first point.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def documented_commands() -> list[tuple[str, str]]:
    """(page:line, command) for every `python -m fakeface...` line inside a fenced block."""
    found = []
    for page in PAGES:
        fenced = False
        for number, line in enumerate(page.read_text().splitlines(), 1):
            if line.lstrip().startswith("```"):
                fenced = not fenced
            elif fenced and "python -m fakeface" in line:
                command = line[line.index("python -m fakeface") :]
                found.append((f"{page.relative_to(ROOT)}:{number}", command))
    return found


def entry_config(module: str) -> str:
    """The config name an entry point's `@hydra_main(...)` composes."""
    parts = module.split(".")
    source = ROOT / "src" / Path(*parts).with_suffix(".py")
    if not source.is_file():
        source = ROOT / "src" / Path(*parts) / "__main__.py"
    assert source.is_file(), f"no entry point {module}"
    match = re.search(r'@hydra_main\("(\w+)"\)', source.read_text())
    assert match, f"{module} is not a Hydra app"
    return match.group(1)


def first_point(overrides: list[str]) -> list[str]:
    """A sweep's overrides at its first point (model.lr=0.1,0.01 -> model.lr=0.1)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [
        f"{o.get_key_element()}={next(o.sweep_string_iterator())}"
        if o.is_sweep_override()
        else o.input_line
        for o in parsed
    ]


COMMANDS = documented_commands()


def test_the_docs_show_the_commands() -> None:
    modules = {shlex.split(c, comments=True)[2] for _, c in COMMANDS}
    assert {"fakeface.train", "fakeface.predict", "fakeface.realtime", "fakeface.export"} <= modules


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_command_composes(where: str, command: str, tmp_path: Path) -> None:
    words = shlex.split(re.sub(r"<[^<>\s]+>", "PLACEHOLDER", command), comments=True)
    assert words[:2] == ["python", "-m"], where
    module, args = words[2], words[3:]
    overrides = [a for a in args if a not in ("-m", "--multirun")]
    assert all(not a.startswith("-") for a in overrides), f"{where}: unexpected flag in {args}"
    overrides = first_point(overrides) if len(overrides) < len(args) else overrides
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(entry_config(module), overrides=overrides, return_hydra_config=True)
    assert cfg.task_name, where
