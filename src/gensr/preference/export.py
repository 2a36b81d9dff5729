"""Export a pair table as a self-contained dataset folder: Parquet + audio + a README card.

The folder can be published as a GenSR-Pref-style dataset: every path in `pairs.parquet` points
inside the folder (audio/<kind>/<id>.wav, and codes/<kind>/<id>.npy for the sampled tokens of AR/MGM
candidates), and the card states how the pairs were built.

The ids of the pair table become file names, so each is checked first (gensr.storage.check_file_name):
an id like `../../x` refuses the export (ValueError naming the table, the column and the pair), as
does an id whose file would hold two different sources, or a source file that is missing; nothing
is written then. A re-export into the same folder leaves no stale file: pairs.parquet, the card and
build_info.json are removed before the first copy and written after the last, a copy whose bytes
differ from its source is replaced, and files of audio/ and codes/ the table no longer names are
removed.
"""

from __future__ import annotations

import filecmp
import json
import shutil
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from gensr.preference.pairs import metric_names, pair_table_to_arrow
from gensr.preference.stats import stats_markdown
from gensr.storage import UnsafeName, atomic_path, check_file_name, path_inside, write_json, write_parquet

AUDIO_KINDS = {"chosen": "chosen_id", "rejected": "rejected_id", "degraded": "deg_id", "clean": "utt_id"}
CODE_KINDS = {"chosen": "chosen_id", "rejected": "rejected_id"}
OWNED_FOLDERS = ("audio", "codes")  # everything under these is the export's own


def _copy(src: Path, dest: Path) -> bool:
    """Copy unless `dest` already holds the same bytes; returns whether it wrote."""
    if dest.is_file() and filecmp.cmp(src, dest, shallow=False):
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    return True


def _plan(pairs: pd.DataFrame, pairs_path: Path) -> tuple[dict[str, Path], dict[str, list]]:
    """(dest relative to the export folder -> source file, path column -> new values); raises before any write."""
    src_dir = pairs_path.parent
    plan: dict[str, Path] = {}
    columns: dict[str, list] = {}
    kinds = [(kind, id_col, f"{kind}_path", "audio", ".wav") for kind, id_col in AUDIO_KINDS.items()]
    kinds += [(kind, id_col, f"{kind}_codes_path", "codes", ".npy") for kind, id_col in CODE_KINDS.items()]
    for kind, id_col, path_col, folder, suffix in kinds:
        if path_col not in pairs:
            continue
        new_paths = []
        for pair_id, ident, rel in zip(pairs["pair_id"], pairs[id_col], pairs[path_col]):
            if folder == "codes" and not isinstance(rel, str):
                new_paths.append(None)
                continue
            try:
                check_file_name(ident, id_col)
            except UnsafeName as err:
                raise ValueError(f"{pairs_path}: pair {pair_id}: {err}; rebuild the table with `gensr pairs`") from None
            if not isinstance(rel, str) or not (src_dir / rel).is_file():
                raise FileNotFoundError(f"{pairs_path}: pair {pair_id}: {path_col} {rel!r} is not a file")
            dest_rel = f"{folder}/{kind}/{ident}{suffix}"
            source = (src_dir / rel).resolve()
            if plan.setdefault(dest_rel, source) != source:
                raise ValueError(f"{pairs_path}: pair {pair_id}: {id_col} {ident!r} names two files, "
                                 f"{plan[dest_rel]} and {source}")
            new_paths.append(dest_rel)
        columns[path_col] = new_paths
    return plan, columns


def _remove_unlisted(out_dir: Path, keep: set[str]) -> None:
    for folder in OWNED_FOLDERS:
        for path in sorted((out_dir / folder).rglob("*"), reverse=True):  # files before their folders
            rel = path.relative_to(out_dir).as_posix()
            if path.is_symlink() or path.is_file():
                if rel not in keep:
                    path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()


def export_dataset(pairs_path: str | Path, out_dir: str | Path, stats: dict, build_info: dict) -> dict:
    """Copy the audio a pair table references into `out_dir` and write the table and card there."""
    pairs_path, out_dir = Path(pairs_path), Path(out_dir)
    pairs = pd.read_parquet(pairs_path)
    plan, columns = _plan(pairs, pairs_path)
    targets = {rel: path_inside(out_dir, rel, "export path") for rel in plan}  # e.g. out/audio linked elsewhere
    out = pairs.copy()
    for path_col, values in columns.items():
        out[path_col] = values
    try:
        card = dataset_card(out, stats, build_info)
    except KeyError as err:
        raise ValueError(f"{pairs_path.parent / 'stats.json'}: no key {err}; rebuild it with `gensr pairs`") from None
    for name in ("pairs.parquet", "build_info.json", "README.md"):  # until rewritten, nothing describes the folder
        (out_dir / name).unlink(missing_ok=True)
    copied = 0
    for rel, source in tqdm(plan.items(), desc="export", leave=False):
        copied += _copy(source, targets[rel])
    _remove_unlisted(out_dir, set(plan))
    write_json({**build_info, "stats": stats}, out_dir / "build_info.json")
    with atomic_path(out_dir / "README.md") as tmp:
        tmp.write_text(card)
    write_parquet(pair_table_to_arrow(out), out_dir / "pairs.parquet")  # last: the folder is complete
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
