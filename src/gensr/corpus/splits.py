"""Deterministic train/pref/valid/test assignment, stratified by speaker.

Utterances are ordered by a seeded hash of their id within each speaker, then dealt out in
rounds: round r holds the r-th utterance of every speaker that has one. The last rounds go to
test, the ones before to valid, the ones before those to pref, the rest to train. So each split
is spread over the speakers (with the bundled corpus every speaker is in every split once the
corpus has a few rounds), the assignment depends only on (seed, ids, speakers), and a speaker
with a single utterance stays in train. Splits are by utterance, not by speaker: test speakers
are also heard in training, which is what restoration of known voices needs; the test
utterances themselves never are.

The test split is held out: no stage trains, samples candidates for pairs, or fits anything on
rows with split == 'test'; only the held-out evaluation reads them. The pref split (0 by default)
is a preference pool: no SFT stage trains on it, so the candidates that make the DPO pairs come
from inputs the base restorer never fitted, as test inputs are. With pref = 0 the assignment
is the same as without it.

`dev` is not a split of the corpus but a tuning set read through `in_split`: the valid split plus
the pref utterances whose pairs DPO holds out (`pairs.heldout_fraction`). Neither the base nor DPO
trains on any of them, and it is about twice the size of valid without re-dealing the corpus.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Sequence

import numpy as np

from gensr.config.corpus import SplitParams

SPLITS = ("train", "pref", "valid", "test")
DEV = "dev"
# Not a split of this corpus: a confirmation set of new sentences with its own seed (`gensr confirm-corpus`,
# data/confirm), read only by the final evaluation and report, never by a tuning run.
CONFIRM = "confirm"


def _order_key(seed: int, utt_id: str) -> str:
    return hashlib.sha256(f"{seed}:{utt_id}".encode()).hexdigest()


def split_sizes(n: int, fractions: SplitParams) -> dict[str, int]:
    """Counts per split: rounded fractions, and at least one valid/test row once n allows it."""
    n_test = round(n * fractions.test)
    n_valid = round(n * fractions.valid)
    if n >= 3:
        n_test = max(n_test, 1)
        n_valid = max(n_valid, 1) if fractions.valid > 0 else 0
    n_test = min(n_test, n)
    n_valid = min(n_valid, n - n_test)
    n_pref = min(round(n * fractions.pref), n - n_valid - n_test)
    return {"train": n - n_pref - n_valid - n_test, "pref": n_pref, "valid": n_valid, "test": n_test}


def assign_splits(utt_ids: Sequence[str], speakers: Sequence[str], fractions: SplitParams, seed: int) -> list[str]:
    """The split of each utterance, in the order given."""
    if len(utt_ids) != len(speakers):
        raise ValueError("utt_ids and speakers must have the same length")
    if len(set(utt_ids)) != len(utt_ids):
        raise ValueError("utt_ids must be unique")
    by_speaker: dict[str, list[str]] = defaultdict(list)
    for utt, spk in zip(utt_ids, speakers):
        by_speaker[spk].append(utt)
    for utts in by_speaker.values():
        utts.sort(key=lambda u: _order_key(seed, u))
    dealt: list[str] = []
    n_rounds = max((len(u) for u in by_speaker.values()), default=0)
    for r in range(n_rounds):
        dealt.extend(sorted((u[r] for u in by_speaker.values() if len(u) > r), key=lambda u: _order_key(seed, u)))
    sizes = split_sizes(len(dealt), fractions)
    ends = np.cumsum([sizes[s] for s in SPLITS])  # train, pref, valid, test occupy consecutive positions
    split_of = {utt: SPLITS[int(np.searchsorted(ends, pos, side="right"))] for pos, utt in enumerate(dealt)}
    return [split_of[u] for u in utt_ids]


def heldout_utterance(utt_id: str, fraction: float) -> bool:
    """Deterministic utterance-level hold-out, so no speaker-sentence leaks between train and held-out pairs."""
    digest = hashlib.sha256(f"heldout:{utt_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64 < fraction


def in_split(splits: Sequence[str], utt_ids: Sequence[str], split: str, heldout_fraction: float) -> np.ndarray:
    """Boolean mask of the rows that belong to `split`: one of SPLITS, or `dev` (valid + held-out pref)."""
    splits = np.asarray(splits, dtype=object)
    if split != DEV:
        return splits == split
    held = np.fromiter((heldout_utterance(u, heldout_fraction) for u in utt_ids), dtype=bool, count=len(splits))
    return (splits == "valid") | ((splits == "pref") & held)
