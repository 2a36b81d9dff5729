"""The typed params loader: strict keys, range checks, overrides, messages that name the key."""

from __future__ import annotations

import pytest
import yaml

from conftest import PARAMS
from gensr.config import ConfigError, load_params, params_from_dict, with_overrides


def test_real_params_file_validates():
    params = load_params(PARAMS)
    assert params.audio.sample_rate == 16000
    assert len(params.corpus.voices) >= 8


def test_real_params_file_reads_the_same_in_dvc():
    """DVC reads params.yaml with ruamel (YAML 1.2), stricter than PyYAML: `[a:b]` in a flow
    list parsed here but broke every `dvc repro` / `make demo`. Both readers must agree."""
    from dvc.utils.serialize import load_yaml

    assert load_yaml(str(PARAMS)) == yaml.safe_load(PARAMS.read_text())


def test_unknown_key_is_rejected_with_its_dotted_name(tmp_path):
    tree = yaml.safe_load(PARAMS.read_text())
    tree["degrade"]["noise"]["snr"] = [0, 1]
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError) as err:
        load_params(bad)
    assert str(bad) in str(err.value)
    assert "degrade.noise.snr: unknown key" in str(err.value)


@pytest.mark.parametrize(
    "override, key",
    [
        ("corpus.n_utterances=0", "corpus.n_utterances"),
        ("degrade.noise.prob=1.5", "degrade.noise.prob"),
        ("ingest.long_files=truncate", "ingest.long_files"),
        ("corpus.split.train=0.95", "corpus.split"),
        ("metrics.score_inputs_split=heldout", "metrics.score_inputs_split"),
    ],
)
def test_out_of_range_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_params(PARAMS, [override])


def test_score_inputs_split_takes_the_corpus_splits_and_dev():
    for split in ("pref", "valid", "test", "dev"):
        assert load_params(PARAMS, [f"metrics.score_inputs_split={split}"]).metrics.score_inputs_split == split


def test_overrides_are_parsed_as_yaml_and_revalidated():
    params = load_params(PARAMS, ["corpus.n_utterances=40", "degrade.noise.snr_db=[0, 5]"])
    assert params.corpus.n_utterances == 40
    assert params.degrade.noise.snr_db == (0.0, 5.0)
    again = with_overrides(params, {"seed": 7})
    assert again.seed == 7 and again.corpus.n_utterances == 40


def test_override_of_a_missing_block_is_an_error():
    with pytest.raises(ConfigError, match="nosuch"):
        load_params(PARAMS, ["nosuch.key=1"])


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "absent.yaml")


def test_missing_key_is_reported():
    tree = yaml.safe_load(PARAMS.read_text())
    del tree["corpus"]["voices"]
    with pytest.raises(ConfigError, match="corpus.voices: required key is missing"):
        params_from_dict(tree)


def test_params_are_immutable():
    params = load_params(PARAMS)
    with pytest.raises(Exception):
        params.seed = 3
