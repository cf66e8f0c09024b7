"""Every `python -m fakeface...` command shown in README.md and docs/*.md composes its config;
every training command shown there also trains for a batch or two, and so does every experiment
with every data= option (those two are slow tests).

Each command line is composed the way its entry point composes it (same config, same
overrides; Hydra's struct mode rejects a key that does not exist), so the docs cannot drift
from the code. `<placeholder>` values stand for the user's files; a -m sweep is checked at its
first point.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def documented_commands() -> list[tuple[str, str]]:
    """(page:line, command) for every `python -m fakeface...` line inside a fenced block, and
    every `fakeface <command> ...` line (the console script) as the `python -m` line it runs."""
    from fakeface.cli import COMMANDS as SCRIPT

    found = []
    for page in PAGES:
        fenced = False
        for number, line in enumerate(page.read_text().splitlines(), 1):
            script = re.match(r"\s*(?:.*&& )?fakeface (\w+)(.*)", line)
            if line.lstrip().startswith("```"):
                fenced = not fenced
            elif fenced and "python -m fakeface" in line:
                command = line[line.index("python -m fakeface") :]
                found.append((f"{page.relative_to(ROOT)}:{number}", command))
            elif fenced and script and script[1] in SCRIPT:
                command = f"python -m {SCRIPT[script[1]][0]}{script[2]}"
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


# ---------------------------------------------------------------------------------------------
# Running the documented training commands, and every experiment with every data= option.
#
# Each runs for real (python -m fakeface.train through tests/conftest.py's run_cli) on tiny data
# made here, in a temporary folder, with Lightning's limits and a batch of 2 appended: one
# epoch of at most two training batches. The user's data folders (`<folder>`, `$HOME/...`) become
# tiny folders of the same layout, `<run>/...` and `<file.ckpt>` the files of an earlier tiny run.

EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
DATA_OPTIONS = sorted(p.stem for p in (ROOT / "conf" / "data").glob("*.yaml"))
TINY = [
    "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1", "trainer.num_sanity_val_steps=0", "data.batch_size=2",
    "data.num_workers=0", "callbacks.progress_bar=null",
]  # fmt: skip
TINY_SYNTHETIC = ["data.synthetic.n_train=8", "data.synthetic.n_valid=4", "data.synthetic.n_test=4"]
# Not run here, with the reason; each still composes above.
NOT_RUN = {
    "trainer=ddp": "DDP over several processes: tests/test_reliability.py runs a 2-process CPU DDP",
    "hydra/launcher=slurm": "needs a SLURM cluster",
}


def shows_an_error(where: str) -> bool:
    """The docs show this command's output as a `fakeface: error: ...` line (a mistake example)."""
    if ":" not in where:
        return False
    page, number = where.rsplit(":", 1)
    lines = (ROOT / page).read_text().splitlines()
    return int(number) < len(lines) and lines[int(number)].startswith("fakeface: error:")


def words_of(command: str) -> list[str]:
    """A documented command line's Hydra overrides (a -m sweep at its first point)."""
    words = shlex.split(command, comments=True)
    args = [w for w in words[3:] if w not in ("-m", "--multirun")]
    return first_point(args) if len(args) < len(words) - 3 else args


def tiny_data(tmp: Path, overrides: list[str]) -> list[str]:
    """Replace the user's folders with tiny ones of the layout the command's config reads."""
    from conftest import compose, make_face_folder

    # data=devsets paths.dev_data=<folder>: the developers' photo sets, tiny folders here too
    overrides = [
        "data.root=[<dev>,<xsrc>]" if o.startswith("paths.dev_data=") else o for o in overrides
    ]
    probe = [
        o for o in overrides if not o.startswith(("data.root=", "data.val_root=", "ckpt_path="))
    ]
    probe = [o for o in probe if not o.startswith(("data.split_file=", "hydra"))]
    data = compose("train", [*probe, f"paths.root_dir={tmp}"]).data
    if data.synthetic is not None:
        return [*overrides, *TINY_SYNTHETIC]
    splits = tmp / "data" / "real_vs_fake" / "real-vs-fake"  # the default data.root
    make_face_folder(splits, per_class=4)

    def folder(name: str) -> str:
        if data.layout != "folder":
            return str(splits)
        return str(make_face_folder(tmp / name, per_class=6, splits=("all",)) / "all")

    out = []
    for o in overrides:
        key, _, value = o.partition("=")
        if key in ("data.root", "data.val_root"):
            names = re.findall(r"<([^<>]+)>|(\$HOME[^,\]]*)", value)
            roots = [folder(f"{key}-{i}") for i in range(len(names))]
            if roots:  # a placeholder for the user's folder, not a path shown as it is
                value = f"[{','.join(roots)}]" if value.startswith("[") else roots[0]
        out.append(f"{key}={value}")
    return out


def run_train(tmp: Path, overrides: list[str], *, tiny: bool = True):
    from conftest import run_cli

    added = list(TINY) if tiny else []
    if tiny and any(o.startswith("model.step_batch_size=") for o in overrides):
        added += ["model.step_batch_size=2"]  # each batch of 2 steps split in two, as documented
        added[added.index("data.batch_size=2")] = "data.batch_size=4"
    if tiny and any(o.startswith("hparams_search=") for o in overrides):
        added.append("hydra.sweeper.n_trials=1")  # the Optuna sweep for real, with one trial
    keys = {a.split("=")[0] for a in added}
    mine = [o for o in overrides if o.split("=")[0].lstrip("+") not in keys]
    argv = [sys.executable, "-m", "fakeface.train", *mine, *added]
    return run_cli(argv, cwd=tmp, timeout=180)


def last_run(tmp: Path) -> Path:
    """The newest run directory (a run or a sweep's job) under the run's outputs/."""
    configs = (tmp / "outputs").glob("**/.hydra/config.yaml")
    return max(configs, key=lambda p: p.stat().st_mtime).parents[1]


def run_documented(where: str, command: str, tmp: Path) -> None:
    overrides = tiny_data(tmp, words_of(command))
    if shows_an_error(where):  # a mistake: one line, exit 1, nothing trained
        result = run_train(tmp, overrides, tiny=False)
        assert result.returncode == 1, f"{where}: {result.stderr[-2000:]}"
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("fakeface: error:"), f"{where}: {result.stderr[-2000:]}"
        return
    earlier = [o for o in overrides if re.search(r"ckpt_path=|<run>|<file\.ckpt>", o)]
    if earlier:  # first a run that writes the checkpoint / split.csv this one reads
        result = run_train(tmp, [o for o in overrides if o not in earlier])
        assert result.returncode == 0, f"{where} (the earlier run): {result.stderr[-3000:]}"
        run = last_run(tmp)
        files = {"<run>": str(run), "<file.ckpt>": str(run / "checkpoints" / "last.ckpt")}
        overrides = [re.sub(r"<run>|<file\.ckpt>", lambda m: files[m[0]], o) for o in overrides]
    result = run_train(tmp, overrides)
    assert result.returncode == 0, f"{where}: {result.stderr[-3000:]}"
    assert (last_run(tmp) / ".hydra" / "config.yaml").is_file(), where


# Keys whose value changes no code path in a tiny run, and the keys TINY sets in place of the
# command's own value: two commands that differ only in them run once. (A mistake example runs as
# written, so only the first kind applies to it.)
SAME_PATH = ("seed", "data.split_seed", "model.lr", "trainer.max_epochs", "trainer.max_time")
TINY_KEYS = tuple(o.split("=")[0] for o in TINY)


def distinct(where: str, command: str) -> str:
    """The command line without those keys, every user folder's placeholder named <folder>."""
    ignored = SAME_PATH if shows_an_error(where) else SAME_PATH + TINY_KEYS
    words = shlex.split(
        re.sub(r"<(?!run>|file\.ckpt>)[^<>\s]+>", "<folder>", command), comments=True
    )
    return " ".join(w for w in words if w.split("=")[0] not in ignored)


TRAIN_COMMANDS = {}  # one of each distinct command line
for _where, _command in COMMANDS:
    if shlex.split(_command, comments=True)[2] == "fakeface.train":
        TRAIN_COMMANDS.setdefault(distinct(_where, _command), (_where, _command))


@pytest.mark.slow
@pytest.mark.parametrize(("where", "command"), TRAIN_COMMANDS.values(), ids=TRAIN_COMMANDS.keys())
def test_documented_training_command_runs(where: str, command: str, tmp_path: Path) -> None:
    for flag, reason in NOT_RUN.items():
        if flag in command:
            pytest.skip(f"{where}: {reason}")
    run_documented(where, command, tmp_path)


PAIRS = [(e, d) for e in EXPERIMENTS for d in DATA_OPTIONS]


@pytest.mark.parametrize(("experiment", "data"), PAIRS)
def test_every_experiment_composes_with_every_data_option(experiment: str, data: str) -> None:
    from conftest import compose

    cfg = compose("train", [f"experiment={experiment}", f"data={data}", "paths.root_dir=/x"])
    assert cfg.task_name == experiment
    assert cfg.model.image_size == cfg.data.image_size  # the network reads the data's size


def documented_pairs() -> set[tuple[str, str]]:
    """(experiment, data option) of the training commands the docs show (run above)."""
    pairs = set()
    for where, command in TRAIN_COMMANDS.values():
        chosen = dict(o.split("=", 1) for o in words_of(command) if "=" in o)
        if "experiment" in chosen and not shows_an_error(where):
            default = "folder" if chosen["experiment"] in ("dcgan_faces", "dcgan_cpu") else "faces"
            default = "synthetic256" if chosen["experiment"] == "dcgan_demo" else default
            pairs.add((chosen["experiment"], chosen.get("data", default)))
    return pairs


UNDOCUMENTED_PAIRS = sorted(set(PAIRS) - documented_pairs())


@pytest.mark.slow
@pytest.mark.parametrize(("experiment", "data"), UNDOCUMENTED_PAIRS)
def test_every_experiment_trains_with_every_data_option(
    experiment: str, data: str, tmp_path: Path
) -> None:
    """The pairs no documented command runs (those ran above): one tiny epoch each."""
    # data=devsets names the developers' photo sets: tiny folders stand in for them too
    root = "data.root=<folder>" if data in ("faces", "folder") else ""
    root = "data.root=[<dev>,<xsrc>]" if data == "devsets" else root
    run_documented(
        "pair", f"python -m fakeface.train experiment={experiment} data={data} {root}", tmp_path
    )
