"""The pseudo-label quality gate: a label is kept only if it passes every non-intrusive check.

Singing has no reference, so only what can be measured on the label itself (and its own input) counts:
1. signal checks, in this order (the first that fails is the reason; DNSMOS is not computed then):
   unreadable, non_finite (NaN/Inf samples), length (label vs input), silent (peak), too_quiet (RMS far below
   the input's: the singing was lost), off_pitch (the label does not follow its input's F0 track: the melody was
   lost, e.g. a label that is brown noise, which DNSMOS scores as high as singing);
2. DNSMOS SIG / BAK / OVRL from the project's metric suite against the thresholds of `pseudo_labels.gate`:
   a NaN score drops the label (`metric_nan`), and every threshold it misses is listed in the reason.
A reason reads `<code>: <detail naming the param>`; `reason_code` is the code of the first failed check.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa

from gensr.config.pseudo import LabelGate

GATE_METRICS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")
_THRESHOLD = {"dnsmos_sig": "min_dnsmos_sig", "dnsmos_bak": "min_dnsmos_bak", "dnsmos_ovrl": "min_dnsmos_ovrl"}

LABEL_SCHEMA = pa.schema([
    ("deg_id", pa.string()), ("utt_id", pa.string()), ("split", pa.string()), ("speaker", pa.string()),
    ("source", pa.string()), ("paradigm", pa.string()), ("checkpoint_sha256", pa.string()), ("seed", pa.int64()),
    ("path", pa.string()), ("duration_s", pa.float64()), ("peak_dbfs", pa.float64()), ("level_drop_db", pa.float64()),
    ("pitch_agreement", pa.float64()),
    ("dnsmos_sig", pa.float64()), ("dnsmos_bak", pa.float64()), ("dnsmos_ovrl", pa.float64()),
    ("kept", pa.bool_()), ("reason_code", pa.string()), ("reason", pa.string()),
])


def _db(x: float) -> float:
    return 20 * math.log10(x) if x > 0 else -math.inf


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


PITCH_FRAME_MS = 10.0


def pitch_agreement(label: np.ndarray, source: np.ndarray, sample_rate: int, tolerance_cents: float,
                    source_f0: np.ndarray | None = None) -> float:
    """Share of the input's voiced frames at which the label is voiced with an F0 within `tolerance_cents` of the
    input's (WORLD dio + stonemask, PITCH_FRAME_MS frames); NaN when the input has no voiced frame. `source_f0`: the
    input's track if already computed (`f0_track(source, sample_rate, PITCH_FRAME_MS)[0]`)."""
    from gensr.singing.synth import f0_track

    f0_in = f0_track(source, sample_rate, PITCH_FRAME_MS)[0] if source_f0 is None else source_f0
    f0_label, _ = f0_track(label, sample_rate, PITCH_FRAME_MS)
    n = min(f0_in.size, f0_label.size)
    f0_in, f0_label = f0_in[:n], f0_label[:n]
    voiced = f0_in > 0
    if not voiced.any():
        return math.nan
    both = voiced & (f0_label > 0)
    cents = np.full(n, np.inf)
    cents[both] = np.abs(1200.0 * np.log2(f0_label[both] / f0_in[both]))
    return float(np.count_nonzero(cents <= tolerance_cents) / np.count_nonzero(voiced))


def signal_check(label: np.ndarray | None, source: np.ndarray, sample_rate: int, gate: LabelGate,
                 unreadable: str | None = None, source_f0: np.ndarray | None = None) -> tuple[str | None, dict]:
    """(reason or None, stats) for one label against its own input; stats: peak_dbfs, level_drop_db,
    pitch_agreement (NaN when not measured). `source_f0`: see `pitch_agreement`."""
    stats = {"peak_dbfs": math.nan, "level_drop_db": math.nan, "pitch_agreement": math.nan}
    if label is None:
        return f"unreadable: {unreadable or 'no label audio'}", stats
    finite = np.isfinite(label)
    if not finite.all():
        return f"non_finite: {int((~finite).sum())} NaN/Inf samples", stats
    peak = float(np.max(np.abs(label))) if label.size else 0.0
    stats["peak_dbfs"] = _db(peak)
    stats["level_drop_db"] = _db(_rms(source)) - _db(_rms(label)) if _rms(label) > 0 else math.inf
    diff = abs(label.size - source.size) / sample_rate
    if diff > gate.max_length_diff_s:
        return (f"length: label {label.size / sample_rate:.3f} s vs input {source.size / sample_rate:.3f} s "
                f"(> pseudo_labels.gate.max_length_diff_s={gate.max_length_diff_s})"), stats
    if stats["peak_dbfs"] <= gate.silence_dbfs:
        return f"silent: peak {stats['peak_dbfs']:.1f} dBFS <= pseudo_labels.gate.silence_dbfs={gate.silence_dbfs}", stats
    if stats["level_drop_db"] > gate.max_level_drop_db:
        return (f"too_quiet: RMS {stats['level_drop_db']:.1f} dB below the input's "
                f"(> pseudo_labels.gate.max_level_drop_db={gate.max_level_drop_db})"), stats
    if gate.min_pitch_agreement is not None:
        stats["pitch_agreement"] = agreement = pitch_agreement(label, source, sample_rate, gate.pitch_tolerance_cents,
                                                               source_f0)
        if agreement < gate.min_pitch_agreement:  # False for NaN: an input without a voiced frame cannot judge
            return (f"off_pitch: voiced within {gate.pitch_tolerance_cents:g} cents of the input's F0 on "
                    f"{agreement:.2f} of its voiced frames "
                    f"(< pseudo_labels.gate.min_pitch_agreement={gate.min_pitch_agreement})"), stats
    return None, stats


def metric_check(scores: dict[str, float], reasons: dict[str, str | None], gate: LabelGate) -> str | None:
    """The DNSMOS part of the gate: None when every score is finite and at least its threshold."""
    for name in GATE_METRICS:
        if not np.isfinite(scores.get(name, math.nan)):
            return f"metric_nan: {name} ({reasons.get(name) or 'not computed'})"
    failed = [f"{name} {scores[name]:.2f} < pseudo_labels.gate.{_THRESHOLD[name]}={getattr(gate, _THRESHOLD[name])}"
              for name in GATE_METRICS if scores[name] < getattr(gate, _THRESHOLD[name])]
    if not failed:
        return None
    return f"low_{failed[0].split()[0]}: " + "; ".join(failed)


def reason_code(reason: str | None) -> str | None:
    return None if reason is None else reason.split(":", 1)[0]


def reason_counts(rows: list[dict]) -> dict[str, int]:
    """Dropped labels per reason code (sorted), e.g. {'low_dnsmos_bak': 3, 'silent': 1}."""
    return dict(sorted(Counter(r["reason_code"] for r in rows if not r["kept"]).items()))


def read_label(path: Path) -> tuple[np.ndarray | None, int | None, str | None]:
    """(audio, sample_rate, None), or (None, None, why) for a label WAV that cannot be read."""
    from gensr.audio.io import read_wav

    if not Path(path).is_file():
        return None, None, "missing: file does not exist"
    try:
        audio, sr = read_wav(path)
    except Exception as err:  # noqa: BLE001 -- a damaged label is data: dropped with its reason
        return None, None, f"{type(err).__name__}: {err}".replace("\n", " ")[:200]
    return audio, sr, None


def gate_labels(items: list[dict], gate: LabelGate, metrics, scores_out: Path, sample_rate: int, *,
                progress: bool = True) -> list[dict]:
    """Gate every item {clip_id, label: path, input: path}; returns per item, in order: clip_id, peak_dbfs,
    level_drop_db, pitch_agreement, dnsmos_sig/bak/ovrl (NaN when not scored), kept, reason_code, reason.

    `metrics` is the project's MetricsParams: the labels that pass the signal checks are scored with its
    DNSMOS settings (names replaced by GATE_METRICS) into the long table `scores_out`."""
    from gensr.audio.io import read_wav
    from gensr.metrics.suite import score_manifest

    from gensr.singing.synth import f0_track

    out, to_score = [], []
    source_f0s: dict[str, np.ndarray] = {}  # an input's F0 track, computed once for all of its labels (aligned, base)
    for item in items:
        label, sr, why = read_label(item["label"])
        if label is not None and sr != sample_rate:
            label, why = None, f"{sr} Hz, expected audio.sample_rate={sample_rate}"
        source, _ = read_wav(item["input"])
        key = str(item["input"])
        if gate.min_pitch_agreement is not None and key not in source_f0s:
            source_f0s[key] = f0_track(source, sample_rate, PITCH_FRAME_MS)[0]
        reason, stats = signal_check(label, source, sample_rate, gate, why, source_f0s.get(key))
        row = {"clip_id": item["clip_id"], **stats, **{m: math.nan for m in GATE_METRICS},
               "kept": False, "reason": reason}
        out.append(row)
        if reason is None:
            to_score.append({"clip_id": item["clip_id"], "path": str(item["label"]), "ref_path": None, "text": None})
    if to_score:
        cfg = metrics.model_copy(update={"names": list(GATE_METRICS)})
        long = score_manifest(cfg, to_score, scores_out, progress=progress)
        values = {(r.clip_id, r.metric): (r.value, r.reason) for r in long.itertuples()}
        for row in out:
            if row["reason"] is not None:
                continue
            scores = {m: float(values[(row["clip_id"], m)][0]) for m in GATE_METRICS}
            reasons = {m: values[(row["clip_id"], m)][1] for m in GATE_METRICS}
            row.update(scores)
            row["reason"] = metric_check(scores, reasons, gate)
    for row in out:
        row["kept"] = row["reason"] is None
        row["reason_code"] = reason_code(row["reason"])
    return out
