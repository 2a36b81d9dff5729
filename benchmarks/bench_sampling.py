"""N = 8 candidates in one batched `restore` call vs N = 1, per paradigm (target: <= 3x the time).

Models have the params.yaml sizes and sampling knobs (random init: speed does not depend on
the weights; the codec gets random codebooks). Timings are interleaved medians over repeats,
on `--clips` clips of `--seconds` each, with restorers.threads torch threads.

    python -m benchmarks sampling [--clips=4] [--seconds=3] [--repeats=3] [--paradigms=ar,mgm,fm] [--set=key=value ...]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def build(params, paradigm: str):
    from gensr.models.codec import SpectralCodec
    from gensr.models.fm import FMRestorer
    from gensr.models.registry import restorer_class

    r = params.restorers
    cfg = getattr(r, paradigm)
    if paradigm == "fm":
        return FMRestorer.build(r.features.model_dump(), cfg.model.model_dump(), cfg.sampling.model_dump())
    codec = SpectralCodec({"stft": r.features.model_dump(), "model": params.codec.model.model_dump()})
    codec.codebooks.copy_(torch.randn(codec.codebooks.shape, generator=torch.Generator().manual_seed(0)))
    return restorer_class(paradigm).from_codec(codec, cfg.model.model_dump(), cfg.sampling.model_dump()).eval()


def main(argv: list[str]) -> None:
    from gensr.config import load_params

    ap = argparse.ArgumentParser(prog="python -m benchmarks sampling")
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--paradigms", default="ar,mgm,fm")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a param, e.g. --set=restorers.mgm.sampling.steps=8 (repeatable)")
    args = ap.parse_args(argv)
    params = load_params(args.params, args.set)
    torch.set_num_threads(params.restorers.threads)
    sr = params.audio.sample_rate
    degraded = 0.1 * torch.randn(args.clips, int(args.seconds * sr), generator=torch.Generator().manual_seed(0))
    print(f"{args.clips} clips x {args.seconds} s, {params.restorers.threads} thread(s), median of {args.repeats}")
    print("| paradigm | N=1 (s) | N=8 (s) | ratio N=8 / N=1 | per candidate speed-up |")
    print("|---|---|---|---|---|")
    for paradigm in args.paradigms.split(","):
        model = build(params, paradigm)
        model.restore(degraded[:1, : sr // 2], 1, [0])  # warm-up
        times = {1: [], 8: []}
        for rep in range(args.repeats):
            for n in (1, 8):
                start = time.perf_counter()
                model.restore(degraded, n, list(range(rep * 10, rep * 10 + n)))
                times[n].append(time.perf_counter() - start)
        t1, t8 = statistics.median(times[1]), statistics.median(times[8])
        print(f"| {paradigm} | {t1:.2f} | {t8:.2f} | {t8 / t1:.2f}x | {8 * t1 / t8:.1f}x |", flush=True)
