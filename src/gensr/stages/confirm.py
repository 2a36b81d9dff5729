"""Stage `confirm_corpus`: the confirmation set, a held-out corpus built beside the main one.

    data/confirm/clean/     wav/, manifest.parquet (split = 'confirm'), quarantine.parquet
    data/confirm/degraded/  wav/, manifest.parquet, quarantine.parquet (the degrade block, confirm.seed)

Its sentences are drawn with confirm.seed and exclude every sentence of the main corpus; its
utterance ids start with `confirm-`. The main corpus, and with it the bases, stay as they are.
No training, sampling or tuning stage reads it: `gensr.sampling.restore.split_rows(params,
'confirm')` is the only door, and only evaluation goes through it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow.parquet as pq

from gensr.config import Params, with_overrides
from gensr.corpus.ingest import quarantine_table
from gensr.corpus.splits import CONFIRM
from gensr.layout import confirm_dir
from gensr.storage import write_json, write_parquet

ID_PREFIX = "confirm-"


def build_confirm_set(params: Params, main_clean: str | Path | None = None) -> dict:
    """Synthesise and degrade the confirmation set; returns a summary (also written to summary.json)."""
    from gensr.corpus.tts import synthesize_corpus
    from gensr.stages.corpus import manifest_table
    from gensr.stages.degrade import build_degraded_corpus

    if params.corpus.source != "tts":
        raise ValueError("the confirmation set is synthesised with the bundled TTS (corpus.source: tts); with a user "
                         "corpus, hold out utterances of your own and evaluate them with `gensr evaluate --split test`")
    if params.confirm.seed == params.seed:
        raise ValueError(f"confirm.seed must differ from seed ({params.seed}): the confirmation set needs draws of its own")
    start = time.perf_counter()
    main_clean = Path(main_clean) if main_clean else Path(params.paths.data) / "clean"
    main_manifest = main_clean / "manifest.parquet"
    if not main_manifest.is_file():
        raise FileNotFoundError(f"{main_manifest}: main corpus not found; run `gensr corpus` first (its sentences are "
                                "excluded from the confirmation set)")
    main_texts = set(pq.read_table(main_manifest, columns=["text"]).column("text").to_pylist())
    out = confirm_dir(params)
    clean_dir, degraded_dir = out / "clean", out / "degraded"
    clean_dir.mkdir(parents=True, exist_ok=True)
    (clean_dir / "manifest.parquet").unlink(missing_ok=True)
    corpus = params.corpus.model_copy(update={"n_utterances": params.confirm.n_utterances})
    rows = synthesize_corpus(corpus, params.confirm.seed, params.audio.sample_rate, clean_dir,
                             exclude_texts=main_texts, id_prefix=ID_PREFIX)
    for row in rows:
        row["split"] = CONFIRM
    write_parquet(quarantine_table([]), clean_dir / "quarantine.parquet")
    write_parquet(manifest_table(rows), clean_dir / "manifest.parquet")
    degrade_params = with_overrides(params, {"seed": params.confirm.seed})
    degraded = build_degraded_corpus(degrade_params, clean_dir, degraded_dir)
    summary = {
        "n_utterances": len(rows), "n_speakers": len({r["speaker"] for r in rows}),
        "hours": round(sum(r["duration_s"] for r in rows) / 3600, 4), "seed": params.confirm.seed,
        "n_degraded": degraded["n_degraded"], "degraded": degraded,
        "shared_texts_with_main": len(main_texts & {r["text"] for r in rows}),
        "seconds": round(time.perf_counter() - start, 1), "path": str(out),
    }
    write_json(summary, out / "summary.json")
    return summary
