"""Metric suite vs the reference wrappers called clip by clip, on the same degraded test clips.

    python -m benchmarks metrics [--clips 200] [--workers 2]

Clips: the default corpus' test split (eSpeak, 60 utterances), each degraded 4 times by the
project's own seeded degradation code (noise, reverb, clipping, ...): the first N by id.
Reference side, one clip at a time with warm models: speechmos `dnsmos.run`, `pesq`, `pystoi`,
resemblyzer `embed_utterance(preprocess_wav(.))` for candidate and reference, and the
pocketsphinx decoder with the same grammar/options (SI-SDR and mel distance use the suite's
own functions). Suite side: `score_manifest` on all N with `metrics.workers` processes,
including worker start-up and model loading. The reference pass is split in two halves
around the suite run so that both see the same background load. Prints per-clip times, the
ratio, the per-metric breakdown and the largest score difference per metric.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
COPIES = 4
TOLERANCE = {"dnsmos": 1e-3, "pesq_wb": 1e-9, "estoi": 1e-9, "si_sdr": 1e-6, "mel_distance": 1e-6,
             "wer": 1e-9, "cer": 1e-9, "speaker_cosine": 1e-4}


def build_clips(params, root: Path, n_clips: int) -> pd.DataFrame:
    """Clean test split + COPIES seeded degraded copies each (cached under `root`)."""
    from gensr.corpus.degrade import BabblePool, clip_rng, degrade
    from gensr.stages.corpus import build_clean_corpus

    rows_path = root / "rows.parquet"
    if rows_path.is_file():
        rows = pd.read_parquet(rows_path)
        if len(rows) >= n_clips:
            return rows.head(n_clips)
    if not (root / "clean" / "manifest.parquet").is_file():
        build_clean_corpus(params, root / "clean")
    manifest = pd.read_parquet(root / "clean" / "manifest.parquet")
    test = manifest[manifest.split == "test"].sort_values("utt_id")
    audio = {r.utt_id: sf.read(root / "clean" / r.path, dtype="float32")[0] for r in test.itertuples()}
    pool = BabblePool.from_arrays({r.utt_id: (r.speaker, audio[r.utt_id]) for r in test.itertuples()})
    rows = []
    (root / "degraded").mkdir(parents=True, exist_ok=True)
    for r in test.itertuples():
        for copy in range(COPIES):
            out, _ = degrade(audio[r.utt_id], 16000, clip_rng(params.seed, r.utt_id, copy), params.degrade,
                             speaker=r.speaker, babble_pool=pool)
            path = root / "degraded" / f"{r.utt_id}__d{copy}.wav"
            sf.write(path, np.clip(out, -1, 1).astype(np.float32), 16000, subtype="FLOAT")
            rows.append(dict(clip_id=path.stem, path=str(path), ref_path=str(root / "clean" / r.path), text=r.text))
    rows = pd.DataFrame(rows).sort_values("clip_id").reset_index(drop=True)
    rows.to_parquet(rows_path)
    return rows.head(n_clips)


class ReferenceWrappers:
    """The libraries' own entry points, one clip at a time, models loaded once."""

    def __init__(self, params):
        import jiwer
        from pesq import pesq
        from pystoi import stoi
        from resemblyzer import VoiceEncoder, preprocess_wav
        from speechmos import dnsmos

        from gensr.metrics.asr import PocketsphinxRecognizer, normalize_text
        from gensr.metrics.mel_distance import MelDistance
        from gensr.metrics.si_sdr import si_sdr

        self.params = params
        self.dnsmos, self.pesq, self.stoi, self.jiwer = dnsmos, pesq, stoi, jiwer
        self.encoder, self.preprocess = VoiceEncoder(device="cpu", verbose=False), preprocess_wav
        self.recognizer = PocketsphinxRecognizer(params.content)
        self.recognizer.load()
        self.normalize = normalize_text
        self.si_sdr = si_sdr
        self.mel = MelDistance(params.mel_distance)
        self.mel.setup()
        self.seconds: dict[str, float] = {}
        warm = np.random.default_rng(0).standard_normal(32000).astype(np.float32) * 0.1
        # first calls compile numba caches and warm torch/onnxruntime: not part of the per-clip time
        dnsmos.run(warm, 16000)
        self.encoder.embed_utterance(preprocess_wav(warm, source_sr=16000))
        self.recognizer.transcribe(warm, "warm-up")

    def _timed(self, key, fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - start
        return out

    def score(self, row) -> dict[str, float]:
        deg = sf.read(row["path"], dtype="float32")[0]
        ref = sf.read(row["ref_path"], dtype="float32")[0]
        d = self._timed("dnsmos (speechmos dnsmos.run)", self.dnsmos.run, deg.copy(), 16000)
        out = {"dnsmos_sig": d["sig_mos"], "dnsmos_bak": d["bak_mos"], "dnsmos_ovrl": d["ovrl_mos"], "dnsmos_p808": d["p808_mos"]}
        out["pesq_wb"] = self._timed("pesq_wb (pesq)", self.pesq, 16000, ref.astype(np.float64), deg.astype(np.float64), "wb")
        out["estoi"] = self._timed("estoi (pystoi)", self.stoi, ref.astype(np.float64), deg.astype(np.float64), 16000, True)
        out["si_sdr"] = self._timed("si_sdr", self.si_sdr, ref, deg)
        from gensr.metrics.base import Clip

        out["mel_distance"] = self._timed("mel_distance", lambda: self.mel.score_clip(
            Clip("x", deg, 16000, reference=ref, reference_rate=16000))["mel_distance"])

        def speaker():
            a = self.encoder.embed_utterance(self.preprocess(deg, source_sr=16000))
            b = self.encoder.embed_utterance(self.preprocess(ref, source_sr=16000))
            return float(np.dot(a, b))

        out["speaker_cosine"] = self._timed("speaker_cosine (resemblyzer x2)", speaker)

        def recognize():
            hyp = self.normalize(self.recognizer.transcribe(deg, row["clip_id"]))
            text = self.normalize(row["text"])
            return self.jiwer.wer(text, hyp), self.jiwer.cer(text, hyp)

        out["wer"], out["cer"] = self._timed("wer+cer (pocketsphinx)", recognize)
        return {k: float(v) for k, v in out.items()}


def main(argv: list[str]) -> None:
    from gensr.config import load_params
    from gensr.metrics import score_manifest, to_wide

    parser = argparse.ArgumentParser(prog="python -m benchmarks metrics", description="options as --name=value")
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "gensr_bench_metrics")
    parser.add_argument("--reference-torch-threads", type=int, default=None,
                        help="torch threads of the reference side (default: torch's own default); "
                        "1 avoids oversubscription of resemblyzer's LSTM when the machine is busy")
    args = parser.parse_args(argv)
    if args.reference_torch_threads:
        import torch

        torch.set_num_threads(args.reference_torch_threads)

    params = load_params(ROOT / "params.yaml")
    rows = build_clips(params, args.cache, args.clips)
    n = len(rows)
    import torch

    print(f"{n} degraded test clips ({rows.clip_id.str.split('__').str[0].nunique()} clean references), "
          f"mean {np.mean([sf.info(p).duration for p in rows.path]):.2f} s; load average {os.getloadavg()[0]:.1f}; "
          f"reference torch threads {torch.get_num_threads()}")

    reference = ReferenceWrappers(params.metrics)
    ref_scores = {}
    halves = (rows.iloc[: n // 2], rows.iloc[n // 2 :])
    ref_wall = 0.0
    start = time.perf_counter()
    for row in halves[0].to_dict("records"):
        ref_scores[row["clip_id"]] = reference.score(row)
    ref_wall += time.perf_counter() - start

    out = args.cache / "suite.parquet"
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    long = score_manifest(params, rows, out, workers=args.workers, progress=False)
    suite_wall = time.perf_counter() - start
    summary = long.attrs["summary"]

    start = time.perf_counter()
    for row in halves[1].to_dict("records"):
        ref_scores[row["clip_id"]] = reference.score(row)
    ref_wall += time.perf_counter() - start

    ref_per_clip, suite_per_clip = ref_wall / n, suite_wall / n
    print(f"\nreference wrappers, clip by clip: {ref_per_clip:.3f} s/clip ({ref_wall:.1f} s)")
    print(f"suite ({summary['workers']} workers, incl. start-up): {suite_per_clip:.3f} s/clip ({suite_wall:.1f} s)")
    print(f"speed-up: {ref_per_clip / suite_per_clip:.1f}x per clip (load average now {os.getloadavg()[0]:.1f})\n")
    print("per-metric time per clip (reference: wall; suite: summed worker time, divide by workers for wall)")
    for key, seconds in sorted(reference.seconds.items(), key=lambda kv: -kv[1]):
        print(f"  reference {key:<34} {seconds / n:.4f} s")
    for key, seconds in sorted(summary["scorer_seconds"].items(), key=lambda kv: -kv[1]):
        print(f"  suite     {key:<34} {seconds / n:.4f} s")

    wide = to_wide(long).set_index("clip_id")
    print("\nlargest |suite - reference| per metric (NaN in both counts as equal)")
    all_ok = True
    for metric in wide.columns:
        ours = wide[metric].to_numpy()
        theirs = np.array([ref_scores[c][metric] for c in wide.index])
        both_nan = np.isnan(ours) & np.isnan(theirs)
        diff = np.where(both_nan, 0.0, np.abs(ours - theirs))
        worst = float(np.nanmax(np.where(np.isnan(diff), np.inf, diff)))
        tol = TOLERANCE["dnsmos" if metric.startswith("dnsmos") else metric]
        ok = worst <= tol
        all_ok &= ok
        print(f"  {metric:<15} {worst:.2e}  (tolerance {tol:g}) {'ok' if ok else 'DIFFERENT'}")
    means = wide.mean()
    print("\nsuite means:", ", ".join(f"{m}={v:.3f}" for m, v in means.items()))
    print("identical scores:", "yes" if all_ok else "NO")
