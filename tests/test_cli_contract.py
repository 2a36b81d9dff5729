"""The CLI contract (issue 21), probed for every command `gensr --help` lists: anything a user can cause exits 2
with one line on stderr naming the file, param or flag, and no traceback. Every hostile input is built here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import PARAMS

MISSING = "missing"  # a path in tmp that is never created


def gensr(*args, env=None):
    from typer.testing import CliRunner

    from gensr.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def assert_refused(result, *names) -> None:
    """Exit 2, one line on stderr naming every one of `names`, no traceback (no exception but the exit)."""
    assert result.exit_code == 2, (result.exit_code, result.output[-2000:], repr(result.exception))
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    for name in names:
        assert str(name) in lines[0], (name, lines[0])


# Per command: the arguments of a run whose input the user has not made (paths.* point at an empty tmp folder,
# and a path flag at `MISSING`), and the extra -S for commands whose input is a params path.
ARGS = {
    "pairs": ["--paradigm", "ar"], "pairs-export": ["--paradigm", "ar", "--out", "{tmp}/export"],
    "dpo": ["--paradigm", "ar"], "evaluate": ["--paradigm", "ar"], "evaluation-table": [],
    "evaluate-base": ["--paradigm", "ar"], "ablation": ["--paradigm", "ar", "--strategy", "multi"],
    "ablation-summary": [], "pair-diagnostics": ["--paradigm", "ar"],
    "pair-learning-curve": ["--paradigm", "ar"], "confirm-corpus": [],
    "train-codec": ["--no-track"],
    "train-base": ["--paradigm", "ar", "--no-track"], "sample": ["--paradigm", "ar"],
    "restore": ["--paradigm", "ar", "--checkpoint", "{tmp}/missing.pt"], "score-candidates": ["--paradigm", "ar"],
    "corpus": ["-S", "corpus.source=user", "-S", "corpus.user_dir={tmp}/missing", "-S",
               "corpus.user_manifest={tmp}/missing.csv", "--out", "{tmp}/clean"],
    "ingest": ["{tmp}/missing", "--out", "{tmp}/ingested"],
    "degrade": ["--clean", "{tmp}/missing", "--out", "{tmp}/degraded"],
    "score": ["--candidates", "{tmp}/missing", "--out", "{tmp}/scores.parquet"],
    "score-inputs": ["--degraded", "{tmp}/missing"],
    "singing-corpus": ["-S", "singing.user_dir={tmp}/missing"], "singing-labels": [],
    "initial-voicefixer": ["--no-track"], "finetune-voicefixer": ["--no-track"], "singing-evaluation": [],
    "singing-annotators": [], "singing-probe": [],
    "demo-page": ["--out", "{tmp}/demo"], "params": [],
}
NO_INPUT = {"params", "demo-page"}  # they read nothing but the params: a run on nothing is valid
NO_PARAMS = {"dagster-sync", "dagster-materialize-all"}  # read a project folder / the Dagster instance, no params
PARAMS_COMMANDS = sorted(ARGS)
INPUT_COMMANDS = sorted(set(ARGS) - NO_INPUT)


def _args(name: str, tmp: Path) -> list[str]:
    return [a.format(tmp=tmp) for a in ARGS[name]]


def _paths(root: Path) -> list[str]:
    """-S overrides that point every output family at `root` (so nothing of the project is read or written)."""
    return [a for d in ("data", "models", "reports", "mlruns") for a in ("-S", f"paths.{d}={root / d}")]


@pytest.fixture
def project(tmp_path):
    for d in ("data", "models", "reports", "mlruns"):
        (tmp_path / d).mkdir()
    return tmp_path


def test_every_command_is_probed():
    """A new command fails here until its probes are added."""
    import typer

    from gensr.cli import app

    commands = set(typer.main.get_command(app).commands)
    assert commands == set(ARGS) | NO_PARAMS, sorted(commands ^ (set(ARGS) | NO_PARAMS))


@pytest.mark.parametrize("name", PARAMS_COMMANDS)
def test_a_params_file_that_is_not_yaml_is_refused(project, name):
    bad = project / "params.yaml"
    bad.write_bytes(b"seed: [1, 2\npaths: {data: x\n")
    assert_refused(gensr(name, "-p", bad, *_args(name, project)), bad, "not valid YAML")


@pytest.mark.parametrize("name", PARAMS_COMMANDS)
def test_a_missing_params_file_is_refused(project, name):
    assert_refused(gensr(name, "-p", project / "nope.yaml", *_args(name, project)), project / "nope.yaml")


@pytest.mark.parametrize("name", PARAMS_COMMANDS)
def test_a_malformed_set_value_is_refused(project, name):
    result = gensr(name, "-p", PARAMS, *_paths(project), "-S", "degrade.noise.snr_db=[0, 5", *_args(name, project))
    assert_refused(result, "-S", "degrade.noise.snr_db")


@pytest.mark.parametrize("name", INPUT_COMMANDS)
def test_a_missing_input_is_refused_naming_it(project, name):
    assert_refused(gensr(name, "-p", PARAMS, *_paths(project), *_args(name, project)), project)
    assert not list((project / "mlruns").iterdir()), "a refused run must not have created an MLflow store"


@pytest.mark.parametrize("name", INPUT_COMMANDS)
def test_params_paths_that_are_a_file_are_refused_naming_it(project, name):
    afile = project / "afile"
    afile.write_text("not a folder")
    paths = [a for d in ("data", "models", "reports") for a in ("-S", f"paths.{d}={afile}")]
    assert_refused(gensr(name, "-p", PARAMS, *paths, *_args(name, project)), project)
    assert afile.read_text() == "not a folder"


def _audio_folder(root: Path) -> Path:
    root.mkdir()
    t = np.arange(16000) / 16000
    sf.write(str(root / "a.wav"), (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    (root / "manifest.csv").write_text("path,text,speaker\na.wav,a b,s\n")
    return root


@pytest.mark.parametrize("name, out_kind", [
    ("ingest", "file"), ("corpus", "file"), ("demo-page", "file"), ("demo-page", "folder"),
    ("score", "folder"), ("score-inputs", "folder"),
])
def test_an_output_path_of_the_wrong_kind_is_refused_and_left_alone(project, name, out_kind):
    """A file where a folder is written, or a folder (of the user's) where a file or a page folder goes."""
    audio = _audio_folder(project / "audio")
    out = project / "out"
    if out_kind == "file":
        out.write_text("mine")
    else:
        out.mkdir()
        (out / "mine.txt").write_text("mine")
    args = {"ingest": [audio], "demo-page": [],
            "corpus": ["-S", "corpus.source=user", "-S", f"corpus.user_dir={audio}", "-S",
                       f"corpus.user_manifest={audio / 'manifest.csv'}"],
            "score": ["--candidates", audio], "score-inputs": ["--degraded", audio]}[name]
    assert_refused(gensr(name, "-p", PARAMS, *_paths(project), *args, "--out", out), out)
    assert (out.read_text() if out_kind == "file" else (out / "mine.txt").read_text()) == "mine"
    assert sorted(p.name for p in project.iterdir()) == ["audio", "data", "mlruns", "models", "out", "reports"]


@pytest.mark.parametrize("probe", ["missing_root", "root_is_a_file", "no_dvc_lock", "missing_mlruns"])
def test_dagster_sync_refuses_a_root_it_cannot_read(project, probe):
    (project / "afile").write_text("x")
    (project / "root").mkdir()
    root = {"missing_root": project / MISSING, "root_is_a_file": project / "afile"}.get(probe, project / "root")
    args = ["--root", root]
    if probe == "missing_mlruns":
        (root / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
        args += ["--mlruns", project / MISSING]
    result = gensr("dagster-sync", *args, env={"DAGSTER_HOME": str(project / "dagster_home")})
    assert_refused(result, project / MISSING if probe == "missing_mlruns" else root)


def test_a_dagster_sync_without_dagster_home_is_refused(project, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert_refused(gensr("dagster-sync", "--root", project), "DAGSTER_HOME")


def test_a_dagster_materialize_all_without_dagster_home_is_refused(monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert_refused(gensr("dagster-materialize-all"), "DAGSTER_HOME")


def test_a_dagster_materialize_all_that_nothing_would_run_is_refused(project):
    """--no-wait without a daemon heartbeat on the instance: the backfill would sit requested, so none is added."""
    home = project / "dagster_home"
    assert_refused(gensr("dagster-materialize-all", "--no-wait", env={"DAGSTER_HOME": str(home)}), "--no-wait",
                   "make dagster")
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_backfills() == []


def test_a_checkpoint_that_is_not_one_is_refused_naming_it(tmp_path):
    from gensr.models.restorer import read_checkpoint

    for name, content in (("junk.pt", b"not a checkpoint" * 10), ("empty.pt", b"")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match="not a readable checkpoint") as err:
            read_checkpoint(tmp_path / name)
        assert str(tmp_path / name) in str(err.value)


def test_a_bug_keeps_its_traceback_and_a_refusal_its_line(monkeypatch):
    """Only a user's error becomes exit 2; an internal error (here a TypeError) still raises, exit 1."""
    from gensr.cli import refusal

    assert refusal(TypeError("x")) is None and refusal(AssertionError("x")) is None
    assert refusal(OSError(28, "No space left on device")) is None
    assert refusal(OSError(40, "Too many levels of symbolic links", "/a/b")) == (
        "error: [Errno 40] Too many levels of symbolic links: '/a/b'")
    assert refusal(KeyError("clip_id")) == "error: missing key 'clip_id'"
    assert refusal(ValueError("a\n  b")) == "error: a b"
