"""Degraded-corpus build time over a TTS clean corpus, per worker count, plus each type alone.

Builds the clean corpus once (n utterances), then times `build_degraded_corpus` fresh for each
worker count, and a per-type cost (ms per 3 s clip, in-process) of every degradation kind.

    python -m benchmarks degrade [--n=600] [--workers=1,2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from gensr.config import load_params
from gensr.corpus import degrade as D
from gensr.stages.corpus import build_clean_corpus
from gensr.stages.degrade import build_degraded_corpus

ROOT = Path(__file__).resolve().parents[1]


def per_type_ms(repeats: int = 20) -> dict[str, float]:
    sr = 16000
    rng = np.random.default_rng(0)
    clip = (0.1 * rng.standard_normal(3 * sr)).astype(np.float32)
    pool = D.BabblePool.from_arrays({f"u{i}": (f"s{i}", clip[::-1].copy()) for i in range(4)})
    none = {f"degrade.{t}.prob": 0.0 for t in D.TYPES}
    cases = {f"noise:{k}": ("noise", {"degrade.noise.kinds": [k]}) for k in ["white", "pink", "babble"]}
    cases |= {t: (t, {}) for t in ["reverb", "clipping", "bandlimit", "packet_loss"]}
    cases |= {f"codec:{k}": ("codec", {"degrade.codec.kinds": [k]}) for k in ["mulaw", "quantize", "mp3", "opus"]}
    out = {}
    for name, (kind, extra) in cases.items():
        params = load_params(ROOT / "params.yaml", {**none, f"degrade.{kind}.prob": 1.0, **extra}).degrade
        start = time.perf_counter()
        for i in range(repeats):
            D.degrade(clip, sr, D.clip_rng(0, f"u{i}", 0), params, speaker="s0", babble_pool=pool)
        out[name] = 1000 * (time.perf_counter() - start) / repeats
    return out


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks degrade")
    parser.add_argument("--n", type=int, default=None, help="utterances [default: corpus.n_utterances]")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    args = parser.parse_args(argv)
    for name, ms in per_type_ms().items():
        print(f"{name:<14} {ms:7.1f} ms per 3 s clip", flush=True)
    overrides = [f"corpus.n_utterances={args.n}"] if args.n else []
    root = Path(tempfile.mkdtemp(prefix="bench_degrade_"))
    try:
        build_clean_corpus(load_params(ROOT / "params.yaml", overrides), root / "clean")
        for workers in [int(w) for w in args.workers.split(",")]:
            params = load_params(ROOT / "params.yaml", [*overrides, f"degrade.workers={workers}"])
            shutil.rmtree(root / "degraded", ignore_errors=True)
            start = time.perf_counter()
            summary = build_degraded_corpus(params, root / "clean", root / "degraded", progress=False)
            took = time.perf_counter() - start
            n = summary["n_degraded"]
            print(f"workers={workers}: {n} clips ({summary['hours'] * 60:.1f} min of audio) in {took:.1f} s "
                  f"({1000 * took / n:.1f} ms/clip)", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
