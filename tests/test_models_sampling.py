"""Candidate sampling and gensr.sampling.restore.restore_split: manifest schema, path rule, seeds, shard resume, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gensr.audio.io import read_wav
from test_models import tiny_params, write_degraded_corpus

torch.set_num_threads(1)


@pytest.fixture()
def project(tmp_path):
    """A tiny degraded corpus (train + test) and a random-init FM restorer at the base checkpoint."""
    from gensr.models.fm import FMRestorer

    params = tiny_params([f"paths.data={tmp_path / 'data'}", f"paths.models={tmp_path / 'models'}",
                          "sample.n_candidates=3", "sample.n_clips=5", "sample.shard_clips=2", "sample.split=pref",
                          "restorers.restore_batch=2"])
    write_degraded_corpus(tmp_path / "data", 9, lambda i: 0.5 + 0.1 * i, lambda i: "test" if i >= 7 else "pref")
    p = params.restorers.fm
    model = FMRestorer.build(params.restorers.features.model_dump(), p.model.model_dump(), p.sampling.model_dump())
    torch.nn.init.normal_(model.velocity.out.weight, std=0.05)  # a non-trivial field
    model.save(tmp_path / "models/base/fm/restorer.pt")
    return params


def test_sample_candidates_manifest_and_resume(project):
    from gensr.stages.sample import sample_candidates

    summary = sample_candidates(project, "fm")
    out = Path(summary["path"]).parent
    table = pd.read_parquet(out / "manifest.parquet")
    assert list(table.columns) == ["cand_id", "deg_id", "utt_id", "paradigm", "candidate", "seed", "path",
                                   "codes_path", "clean_path", "degraded_path", "text", "speaker", "split"]
    assert table["codes_path"].isna().all() and not (out / "codes").exists()  # FM samples no tokens
    assert len(table) == 5 * 3 and table["deg_id"].nunique() == 5 and set(table["split"]) == {"pref"}
    assert table["cand_id"].is_monotonic_increasing and table["seed"].nunique() == 15
    row = table.iloc[0]
    assert row["cand_id"] == f"{row['deg_id']}__c{row['candidate']}"
    cand, _ = read_wav(out / row["path"])
    clean, _ = read_wav(out / row["clean_path"])  # path rule: relative to the manifest folder
    degraded, _ = read_wav(out / row["degraded_path"])
    assert len(cand) == len(clean) == len(degraded)
    first = (out / "manifest.parquet").read_bytes()
    again = sample_candidates(project, "fm")
    assert again["shards_resumed"] == again["shards"] == 3
    assert (out / "manifest.parquet").read_bytes() == first
    victim = sorted((out / "shards").glob("shard-*.parquet"))[1]
    victim.unlink()
    wav = out / table.iloc[0]["path"]
    before = wav.read_bytes()
    resumed = sample_candidates(project, "fm")
    assert resumed["shards_resumed"] == 2
    assert (out / "manifest.parquet").read_bytes() == first and wav.read_bytes() == before


def test_token_candidates_store_the_tokens_they_were_decoded_from(project):
    """AR/MGM candidates keep their sampled tokens ([stft frames, K] per clip): decoding them again
    with the clip's degraded input gives the written WAV, so DPO can score what the model generated."""
    from gensr.models import load_restorer
    from gensr.models.features import n_frames
    from gensr.stages.sample import sample_candidates
    from test_align import tiny_restorer

    path = Path(project.paths.models) / "base/ar/restorer.pt"
    tiny_restorer("ar").save(path)
    out = Path(sample_candidates(project, "ar")["path"]).parent
    table = pd.read_parquet(out / "manifest.parquet")
    assert table["codes_path"].notna().all() and len(list((out / "codes").glob("*.npy"))) == len(table)
    model = load_restorer(path)
    model.sampling.update(project.restorers.ar.sampling.model_dump())  # as the stage does
    for row in table.iloc[[0, 4]].itertuples():
        codes = np.load(out / row.codes_path)
        wave, _ = read_wav(out / row.path)
        assert codes.dtype == np.int32 and codes.shape == (n_frames(len(wave), model.stft_cfg.hop), model.n_codebooks)
        degraded = torch.from_numpy(read_wav(out / row.degraded_path)[0])[None]
        again, again_codes = model.restore(degraded, 1, [int(row.seed)], return_codes=True)
        assert np.array_equal(again_codes[0, 0].numpy(), codes)
        assert np.allclose(again[0, 0].numpy(), wave, atol=1e-4)


def test_candidates_of_a_clip_differ(project):
    from gensr.stages.sample import sample_candidates

    out = Path(sample_candidates(project, "fm")["path"]).parent
    table = pd.read_parquet(out / "manifest.parquet")
    one = table[table["deg_id"] == table["deg_id"].iloc[0]]
    waves = [read_wav(out / p)[0] for p in one["path"]]
    assert not np.allclose(waves[0], waves[1]) and not np.allclose(waves[1], waves[2])


def test_restore_split_one_seeded_output_per_clip(project, tmp_path):
    from gensr.layout import base_checkpoint
    from gensr.sampling.restore import restore_split

    manifest = restore_split(project, "fm", base_checkpoint(project, "fm"), "test", out_dir=tmp_path / "r1")
    table = pd.read_parquet(manifest)
    assert list(table["deg_id"]) == ["u07__d0", "u08__d0"] and "cand_id" not in table.columns
    again = restore_split(project, "fm", base_checkpoint(project, "fm"), "test", out_dir=tmp_path / "r2")
    for p in table["path"]:
        assert (manifest.parent / p).read_bytes() == (again.parent / p).read_bytes()


def test_restore_split_with_several_samples_per_clip(project, tmp_path):
    """evaluate.samples_per_clip: K seeded restorations per clip; sample 0 is the single restoration,
    and per-clip means keep a NaN visible."""
    from gensr.stages.evaluate import per_clip_means
    from gensr.layout import base_checkpoint
    from gensr.sampling.restore import restore_split

    ckpt = base_checkpoint(project, "fm")
    single = pd.read_parquet(restore_split(project, "fm", ckpt, "test", out_dir=tmp_path / "one"))
    manifest = restore_split(project, "fm", ckpt, "test", out_dir=tmp_path / "three", samples=3)
    table = pd.read_parquet(manifest)
    assert len(table) == 6 and table.groupby("deg_id")["cand_id"].nunique().tolist() == [3, 3]
    assert table["seed"].nunique() == 6 and table["codes_path"].isna().all()
    for deg_id, path in zip(single["deg_id"], single["path"]):
        first = table[(table["deg_id"] == deg_id) & (table["candidate"] == 0)].iloc[0]
        # equal up to float rounding, as a clip is to itself in another batch (test_models.py): three samples make a
        # larger batch, and on some CPUs (AMD EPYC, AVX-512) its convolutions round differently
        three, one = read_wav(tmp_path / "three" / first["path"]), read_wav(tmp_path / "one" / path)
        assert three[1] == one[1] and three[0].shape == one[0].shape
        np.testing.assert_allclose(three[0], one[0], rtol=0, atol=1e-5)
    wide = pd.DataFrame({"clip_id": table["cand_id"], "m": [1.0, 2.0, 3.0, 4.0, np.nan, 6.0]})
    means = per_clip_means(wide, dict(zip(table["cand_id"], table["deg_id"])))
    assert means["clip_id"].tolist() == ["u07__d0", "u08__d0"]
    assert means["m"].iloc[0] == 2.0 and np.isnan(means["m"].iloc[1])
    with pytest.raises(ValueError, match="no clip"):
        per_clip_means(wide.assign(clip_id="stray"), dict(zip(table["cand_id"], table["deg_id"])))
    with pytest.raises(ValueError, match="samples_per_clip"):
        restore_split(project, "fm", ckpt, "test", out_dir=tmp_path / "zero", samples=0)


def test_sampling_refuses_test_split_and_wrong_paradigm(project):
    from gensr.config import with_overrides
    from gensr.stages.sample import sample_candidates

    with pytest.raises(ValueError, match="held out"):
        sample_candidates(with_overrides(project, ["sample.split=test"]), "fm")
    with pytest.raises(ValueError, match="no clips in split 'train'$"):
        sample_candidates(with_overrides(project, ["sample.split=train"]), "fm")
    with pytest.raises(ValueError, match="not 'ar'"):
        sample_candidates(project, "ar", checkpoint=Path(project.paths.models) / "base/fm/restorer.pt")
    manifest = Path(project.paths.data) / "degraded/manifest.parquet"
    table = pd.read_parquet(manifest)
    table.assign(split=table["split"].replace("pref", "train")).to_parquet(manifest)  # a corpus without a pool
    with pytest.raises(ValueError, match="no clips in split 'pref'.*corpus.split.pref is 0"):
        sample_candidates(project, "fm")


def test_dagster_assets_are_partitioned_by_paradigm():
    import dagster as dg

    from gensr_dagster.definitions import defs

    graph = defs.resolve_asset_graph()
    for name in ("base_checkpoints", "candidate_samples"):
        node = graph.get(dg.AssetKey(name))
        assert node.partitions_def.get_partition_keys() == ["ar", "mgm", "fm"]
    assert dg.AssetKey("codec_checkpoint") in graph.get(dg.AssetKey("base_checkpoints")).parent_keys
    assert dg.AssetKey("base_checkpoints") in graph.get(dg.AssetKey("candidate_samples")).parent_keys
