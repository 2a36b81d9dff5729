"""Stage `sample`: N seeded candidates per clip of the preference pool, for the DPO pairs.

    <paths.data>/candidates/<paradigm>/wav/<deg_id>__c<j>.wav
    <paths.data>/candidates/<paradigm>/codes/<deg_id>__c<j>.npy   (AR/MGM: the sampled tokens, int32
        [frames, K], frames = torch.stft frames of the clip; DPO scores these, not a re-encoding)
    <paths.data>/candidates/<paradigm>/manifest.parquet
        cand_id, deg_id, utt_id, paradigm, candidate, seed, path, codes_path (null for FM), clean_path,
        degraded_path, text, speaker, split          (paths relative to the manifest's folder)

The restore loop itself (shards, resume, fingerprints) is `gensr.sampling.restore`.
"""

from __future__ import annotations

from pathlib import Path

from gensr.config import Params
from gensr.corpus.splits import CONFIRM
from gensr.layout import base_checkpoint, candidates_dir
from gensr.sampling.restore import clip_seed, restore_rows, restore_rows_part, select_clips, split_rows
from gensr.storage import write_json


# --- stages ------------------------------------------------------------------------------------
def _sampling_job(params: Params, paradigm: str, checkpoint: str | Path | None, out_dir: str | Path | None) -> tuple:
    """The arguments of the restore job of `paradigm`, shared by the whole stage and by each shard partition."""
    s = params.sample
    checkpoint = Path(checkpoint) if checkpoint else base_checkpoint(params, paradigm)
    out_dir = Path(out_dir) if out_dir else candidates_dir(params, paradigm)
    if s.split in ("test", CONFIRM):
        raise ValueError(f"sample.split must not be '{s.split}': it is held out for evaluation")
    deg_root, rows = split_rows(params, s.split)
    rows = select_clips(rows, s.n_clips, s.seed)
    return (params, paradigm, checkpoint, rows, deg_root, out_dir, s.n_candidates,
            lambda deg_id, j: clip_seed(s.seed, deg_id, j), True, s.shard_clips, f"sampling {paradigm} x{s.n_candidates}")


def sample_candidates(params: Params, paradigm: str, checkpoint: str | Path | None = None,
                      out_dir: str | Path | None = None) -> dict:
    """N seeded candidates per clip of the pair subset (sample.n_clips of sample.split)."""
    job = _sampling_job(params, paradigm, checkpoint, out_dir)
    summary = restore_rows(*job)
    write_json(summary, job[5] / "summary.json")
    return summary


def sample_candidates_part(params: Params, paradigm: str, part: int, parts: int | None = None,
                           checkpoint: str | Path | None = None, out_dir: str | Path | None = None) -> dict:
    """Shard partition `part` of `parts` (default scaleout.shards) of `sample_candidates`: the resume shards i with
    i % parts == part, without the manifest; `sample_candidates` then assembles exactly what one run writes."""
    parts = parts if parts is not None else shard_partitions(params)
    return restore_rows_part(*_sampling_job(params, paradigm, checkpoint, out_dir), part=part, parts=parts)


def shard_partitions(params: Params) -> int:
    """scaleout.shards (1 when params have no scaleout block)."""
    return params.scaleout.shards if params.scaleout is not None else 1


__all__ = ["sample_candidates", "sample_candidates_part", "shard_partitions", "candidates_dir", "base_checkpoint"]
