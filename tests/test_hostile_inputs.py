"""Hostile input (issue 21): a clear refusal (exit 2, one line naming the file/param/flag) or a quarantine with
a reason, never a misleading number or a stale file. Every hostile input is built here, in tmp_path."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import PARAMS, ROOT


def gensr(*args, cwd=None) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess: exit code and stderr exactly as a user sees them."""
    return subprocess.run([sys.executable, "-c", "from gensr.cli import main; main()", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=300)


def assert_refused(result: subprocess.CompletedProcess, *names: str) -> None:
    """Exit 2, one line on stderr naming every one of `names`, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout[-500:], result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for name in names:
        assert name in lines[0], (name, lines[0])


# --- 5. strict params --------------------------------------------------------------------------------------------
def _params_text_with(old: str, new: str) -> str:
    text = PARAMS.read_text()
    assert text.count(old) == 1, old
    return text.replace(old, new)


@pytest.mark.parametrize("name, content, expected", [
    ("binary.yaml", bytes(range(256)) * 4, "not a YAML params file"),
    ("broken.yaml", b"seed: [1, 2\npaths: {data: x\n", "not valid YAML"),
    ("tabs.yaml", b"seed:\t1\n\t- x: {\n", "not valid YAML"),
    ("list.yaml", b"- seed\n- paths\n", "top level must be a mapping"),
])
def test_a_params_file_that_is_not_yaml_params_is_refused_naming_it(tmp_path, name, content, expected):
    from gensr.config import ConfigError, load_params

    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=expected) as err:
        load_params(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_key_given_twice_is_refused_with_its_dotted_name(tmp_path):
    from gensr.config import ConfigError, load_params

    path = tmp_path / "params.yaml"
    path.write_text(_params_text_with("  min_seconds: 0.25        # shorter",
                                      "  min_seconds: 0.25\n  min_seconds: 0.5        # shorter"))
    with pytest.raises(ConfigError, match=r"metrics\.min_seconds .*given twice"):
        load_params(path)
    with pytest.raises(ConfigError, match=r"pairs\.margins\.pesq_wb .*given twice"):
        load_params(PARAMS, ["pairs.margins={pesq_wb: 0.1, pesq_wb: 0.2}"])


@pytest.mark.parametrize("override, key", [
    ("degrade.noise.snr_db=[0, 5", "degrade.noise.snr_db"),       # unclosed list
    ("pairs.margins={pesq_wb: 0.1", "pairs.margins"),              # unclosed mapping
    ("seed", "seed"),                                              # no '='
    ("=3", "=3"),                                                  # no key
    ("dpo.ar.lr=.nan", "dpo.ar.lr"),
    ("dpo.ar.lr=nan", "dpo.ar.lr"),
    ("metrics.min_seconds=.inf", "metrics.min_seconds"),
    ("degrade.noise.snr_db=[0, .inf]", "degrade.noise.snr_db"),
    ("pairs.margins={pesq_wb: .nan}", "pairs.margins.pesq_wb"),
    ("corpus.n_utterances=true", "corpus.n_utterances"),
    ("seed=true", "seed"),
    ("degrade.noise.snr_db=[0, true]", "degrade.noise.snr_db"),
    ("pairs.margins={pesq_wb: true}", "pairs.margins"),
    ("metrics.names=[pesq, estoi]", "metrics.names"),
    ("metrics.names=[estoi, estoi]", "metrics.names"),
    ("pairs.metrics=[pesq_wb, pesqwb]", "pairs.metrics"),
    ("pairs.margins={pesqwb: 0.1}", "pairs.margins"),
    ("pairs.strategies=[multi, single:pesq]", "pairs.strategies"),
    ("dpo.strategy=single:nosuch", "dpo.strategy"),
    ("evaluate.strategy=single:nosuch", "evaluate.strategy"),
    ("ablation.strategies=[multi, single:nosuch]", "ablation.strategies"),
])
def test_a_hostile_override_is_refused_at_load_naming_the_key(override, key):
    from gensr.config import ConfigError, load_params

    with pytest.raises(ConfigError) as err:
        load_params(PARAMS, [override])
    assert key in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_booleans_and_finite_numbers_stay_valid_where_they_belong():
    from gensr.config import load_params, with_overrides

    params = load_params(PARAMS, ["metrics.dnsmos.personalized=true", "pairs.margins={pesq_wb: 0.05}",
                                  "metrics.content.pocketsphinx_options={wip: 0.1, fsgusefiller: true}"])
    assert params.metrics.dnsmos.personalized is True and params.pairs.margins == {"pesq_wb": 0.05}
    assert params.metrics.content.pocketsphinx_options["fsgusefiller"] is True
    assert with_overrides(load_params(PARAMS), {}) == load_params(PARAMS)  # a dump of valid params reloads


def test_the_config_metric_vocabulary_is_the_registry():
    from gensr.config.metrics import KNOWN_METRICS
    from gensr.metrics.registry import METRIC_NAMES, SPECS

    assert METRIC_NAMES == KNOWN_METRICS and tuple(SPECS) == KNOWN_METRICS


@pytest.mark.parametrize("args, names", [
    (["-S", "degrade.noise.snr_db=[0, 5"], ["-S", "degrade.noise.snr_db"]),
    (["-S", "corpus.n_utterances=true"], ["corpus.n_utterances"]),
    (["-S", "metrics.names=[pesq]"], ["metrics.names"]),
])
def test_cli_refuses_hostile_params_with_exit_2_and_one_line(tmp_path, args, names):
    assert_refused(gensr("params", "-p", PARAMS, *args), *names)


def test_cli_refuses_a_binary_params_file_with_exit_2_and_one_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    assert_refused(gensr("params", "-p", path), str(path))
