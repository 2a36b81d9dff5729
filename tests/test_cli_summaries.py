"""The restorer stages print a few readable lines, not their whole summary (which stays in its JSON file):
`make demo` runs them all, and a 200-line JSON dump per stage buried the log."""

from __future__ import annotations

import math

import pytest


def _comparison(metrics=("pesq_wb", "dnsmos_ovrl", "wer")) -> dict:
    table = {m: {"degraded": 1.25, "restored": 1.5, "diff": 0.25, "ci_low": 0.125, "ci_high": 0.375, "n": 60}
             for m in metrics}
    table["wer"] = {"degraded": 0.5, "restored": math.nan, "diff": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                    "n": 0}
    return table


SUMMARIES = {
    "train-codec": ("gensr.stages.restorers.train_codec", ["--no-track"], {
        "checkpoint": "models/codec/codec.pt", "n_params": 512577, "final_loss": 0.4277, "train_seconds": 546.6,
        "ceiling": {"clean_phase": _comparison(), "degraded_phase": _comparison()}, "kmeans_seconds": 2.3}),
    "train-base": ("gensr.stages.restorers.train_base", ["--paradigm", "ar", "--no-track"], {
        "paradigm": "ar", "checkpoint": "models/base/ar/restorer.pt", "n_trainable_params": 1353856, "steps": 1400,
        "final_loss": 2.2512, "train_seconds": 180.1, "beats_degraded": {"dnsmos_ovrl": True, "pesq_wb": False},
        "test": _comparison(), "codec_ceiling": {"clean_phase": _comparison()}}),
    "sample": ("gensr.stages.sample.sample_candidates", ["--paradigm", "ar"], {
        "paradigm": "ar", "path": "data/candidates/ar/manifest.parquet", "n_rows": 3600, "n_clips": 600,
        "n_candidates": 6, "seconds": 134.5, "shards": 30, "shards_resumed": 2, "sampling": {"top_k": 2}}),
}


@pytest.mark.parametrize("command", sorted(SUMMARIES))
def test_a_stage_prints_a_short_summary_and_names_its_json(command, monkeypatch):
    from typer.testing import CliRunner

    from gensr.cli import app

    target, args, summary = SUMMARIES[command]
    module, name = target.rsplit(".", 1)
    monkeypatch.setattr(__import__(module, fromlist=[name]), name, lambda *a, **k: summary)
    result = CliRunner().invoke(app, [command, *args, "-S", "evaluate.confidence=0.9"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert "{" not in result.stdout, result.stdout  # no JSON dump
    tables = {"train-codec": 2, "train-base": 1, "sample": 0}[command]
    assert len(lines) == 2 + tables * (1 + 3), result.stdout  # headline, per table a title + one line per metric, path
    where = {"train-codec": "models/codec", "train-base": "models/base/ar", "sample": "data/candidates/ar"}[command]
    assert lines[-1] == f"summary: {where}/summary.json"
    if tables:
        pesq = next(line for line in lines if line.strip().startswith("pesq_wb"))
        assert pesq.split() == ["pesq_wb", "1.250", "->", "1.500", "+0.250", "[+0.125,", "+0.375]"]
        wer = next(line for line in lines if line.strip().startswith("wer"))
        assert "nan" in wer  # a NaN metric stays NaN in the printout
        titles = [line for line in lines if line.endswith(":") and not line.startswith(" ")]
        assert len(titles) == tables and all(t.endswith("(degraded -> restored, diff [90% CI]):") for t in titles)
    if command == "train-base":
        assert lines[0].endswith("beats the degraded input: dnsmos_ovrl yes, pesq_wb NO")
    if command == "sample":
        assert "3600 candidates (600 clips x 6)" in lines[0] and "2 of 30 shards resumed" in lines[0]
