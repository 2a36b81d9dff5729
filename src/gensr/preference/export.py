"""Export a pair table as a self-contained dataset folder: Parquet + audio + a README card.

The folder can be published as a GenSR-Pref-style dataset: every path in `pairs.parquet` points
inside the folder (audio/<kind>/<id>.wav, and codes/<kind>/<id>.npy for the sampled tokens of AR/MGM
candidates), and the card states how the pairs were built.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from gensr.preference.pairs import metric_names, pair_table_to_arrow
from gensr.preference.stats import stats_markdown
from gensr.storage import atomic_path, write_json, write_parquet

AUDIO_KINDS = {"chosen": "chosen_id", "rejected": "rejected_id", "degraded": "deg_id", "clean": "utt_id"}
CODE_KINDS = {"chosen": "chosen_id", "rejected": "rejected_id"}


def _copy(src: Path, dest: Path) -> bool:
    if dest.exists():
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    return True


def export_dataset(pairs_path: str | Path, out_dir: str | Path, stats: dict, build_info: dict) -> dict:
    """Copy the audio a pair table references into `out_dir` and write the table and card there."""
    pairs_path, out_dir = Path(pairs_path), Path(out_dir)
    src_dir = pairs_path.parent
    pairs = pd.read_parquet(pairs_path)
    out = pairs.copy()
    copied = 0
    for kind, id_col in AUDIO_KINDS.items():
        path_col = f"{kind}_path"
        new_paths = []
        for ident, rel in tqdm(list(zip(pairs[id_col], pairs[path_col])), desc=f"export {kind}", leave=False):
            dest_rel = f"audio/{kind}/{ident}.wav"
            copied += _copy(src_dir / rel, out_dir / dest_rel)
            new_paths.append(dest_rel)
        out[path_col] = new_paths
    for kind, id_col in CODE_KINDS.items():
        path_col = f"{kind}_codes_path"
        if path_col not in pairs:
            continue
        new_paths = []
        for ident, rel in zip(pairs[id_col], pairs[path_col]):
            if not isinstance(rel, str):
                new_paths.append(None)
                continue
            dest_rel = f"codes/{kind}/{ident}.npy"
            copied += _copy(src_dir / rel, out_dir / dest_rel)
            new_paths.append(dest_rel)
        out[path_col] = new_paths
    write_parquet(pair_table_to_arrow(out), out_dir / "pairs.parquet")
    write_json({**build_info, "stats": stats}, out_dir / "build_info.json")
    with atomic_path(out_dir / "README.md") as tmp:
        tmp.write_text(dataset_card(out, stats, build_info))
    return {"out_dir": str(out_dir), "n_pairs": int(len(out)), "files_copied": copied}


def dataset_card(pairs: pd.DataFrame, stats: dict, info: dict) -> str:
    metrics = metric_names(pairs)
    return f"""# GenSR-Pref preference pairs: {info.get('paradigm', '?')} / {info.get('strategy', '?')}

Preference pairs for aligning a generative speech restorer with DPO, built by the GenSR-Pref pipeline
(multi-metric preference alignment for generative speech restoration).

## How the pairs were built
- Each degraded clip was restored into several candidates by the `{info.get('paradigm')}` restorer itself.
- Every candidate was scored on: {', '.join(metrics)}.
- Strategy `{info.get('strategy')}`: {_strategy_text(info.get('strategy', ''))}
- Margins (metric units): {json.dumps(info.get('margins', {}))}; at most {info.get('max_pairs_per_clip')} pairs per
  clip, chosen by the largest normalised margin (the weakest metric's advantage in stds across all candidates).
- A NaN metric never votes: a candidate with any NaN metric never forms a pair.
- The test split was never used; `role` = heldout marks pairs kept out of DPO training for validation.

## Statistics
{stats_markdown(stats)}

## Files
- `pairs.parquet`: one row per pair: pair_id, deg_id, utt_id, split, role, rank, chosen_id, rejected_id,
  `*_path` and `*_codes_path` (relative to this folder), text, speaker, seed (for DPO's shared mask/timestep/noise),
  margin_norm, and full metric vectors `chosen_<metric>` / `rejected_<metric>`.
- `audio/{{chosen,rejected,degraded,clean}}/<id>.wav`: 16 kHz mono float WAV.
- `codes/{{chosen,rejected}}/<id>.npy` (token restorers only; `*_codes_path` is null otherwise): the codec tokens
  the restorer sampled, int32 [frames, codebooks]; DPO scores these rather than a re-encoding of the WAV.
- `build_info.json`: params and source hashes of this build.

## Provenance
Clean speech is synthetic (eSpeak NG) unless the build params name a user corpus; check its license
before publishing. Source data hash: {info.get('data_hash', 'n/a')}.
"""


def _strategy_text(strategy: str) -> str:
    if strategy == "multi":
        return "the chosen candidate beats the rejected one on every metric (unanimous Pareto dominance)."
    if strategy == "gt_as_chosen":
        return "the clean reference is the chosen side; the lowest-scoring candidates are rejected (a control)."
    return f"preference by the single metric `{strategy.split(':', 1)[-1]}` alone (reward-hacking ablation)."
