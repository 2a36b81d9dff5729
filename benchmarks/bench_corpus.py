"""Clean-corpus build time: eSpeak NG synthesis of n utterances (params.yaml voices) + splits.

Reports the whole stage (fresh synthesis process, resampling, trimming, WAV writes, Parquet)
and a rerun on the finished folder (synthesis again, but identical WAVs are reused).

    python -m benchmarks corpus [--n=600] [--repeats=1]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from gensr.config import load_params
from gensr.stages.corpus import build_clean_corpus

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks corpus")
    parser.add_argument("--n", type=int, default=None, help="utterances [default: corpus.n_utterances]")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    overrides = [f"corpus.n_utterances={args.n}"] if args.n else []
    params = load_params(ROOT / "params.yaml", overrides)
    for repeat in range(args.repeats):
        out = Path(tempfile.mkdtemp(prefix="bench_corpus_"))
        try:
            start = time.perf_counter()
            summary = build_clean_corpus(params, out)
            fresh = time.perf_counter() - start
            start = time.perf_counter()
            build_clean_corpus(params, out)
            rerun = time.perf_counter() - start
        finally:
            shutil.rmtree(out, ignore_errors=True)
        n = summary["n_utterances"]
        print(
            f"run {repeat}: {n} utterances, {summary['total_hours'] * 3600:.0f} s of audio, "
            f"{summary['n_speakers']} speakers: fresh build {fresh:.1f} s ({1000 * fresh / n:.1f} ms/utt), "
            f"rerun {rerun:.1f} s",
            flush=True,
        )
