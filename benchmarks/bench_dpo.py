"""One DPO step on B pairs vs one SFT step on the same 2B clips (chosen + rejected), per paradigm.

Models have the params.yaml sizes (random init; speed does not depend on the weights). AR/MGM
use cached reference scores (the DPO step runs only the policy) and, as in training, score the
candidates' stored sampled tokens (no codec encoding in the DPO step; the SFT step encodes its
clean targets); FM runs its reference every step on the same t and noise, with dpo.fm.score_draws
draws per score as in training. Target: DPO/SFT <= 1.3x for AR and MGM.

    python -m benchmarks dpo [--repeats=3] [--paradigms=ar,mgm,fm]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from gensr.align.data import stacked_scores
from gensr.align.loss import dpo_loss

ROOT = Path(__file__).resolve().parents[1]


def build(params, paradigm: str):
    """A restorer of the configured size (the codec gets random codebooks: speed only)."""
    from gensr.models.codec import SpectralCodec
    from gensr.models.fm import FMRestorer
    from gensr.models.registry import restorer_class

    r = params.restorers
    stft = r.features.model_dump()
    cfg = getattr(r, paradigm)
    if paradigm == "fm":
        return FMRestorer.build(stft, cfg.model.model_dump(), cfg.sampling.model_dump())
    codec = SpectralCodec({"stft": stft, "model": params.codec.model.model_dump()})
    codec.codebooks.copy_(torch.randn_like(codec.codebooks))
    return restorer_class(paradigm).from_codec(codec, cfg.model.model_dump(), cfg.sampling.model_dump())


def timed_pair(first, second, repeats: int) -> tuple[float, float]:
    """Median times of two steps, interleaved so that load from other processes hits both alike."""
    first(), second()  # warm-up
    a, b = [], []
    for _ in range(repeats):
        for fn, out in ((first, a), (second, b)):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return statistics.median(a), statistics.median(b)


def bench_paradigm(params, paradigm: str, repeats: int) -> dict:
    torch.manual_seed(0)
    hp = params.dpo.for_paradigm(paradigm)
    seconds = params.dpo.segment_seconds or params.corpus.max_seconds  # null (whole clips): the longest TTS utterance
    b, t = hp.batch_size, int(seconds * params.audio.sample_rate)
    policy = build(params, paradigm)
    policy.eval()
    reference = build(params, paradigm)
    reference.load_state_dict(policy.state_dict())
    reference.requires_grad_(False)
    if hp.score_draws is not None and hasattr(policy, "score_draws"):  # as in training (dpo.<p>.score_draws)
        policy.score_draws = reference.score_draws = hp.score_draws
    opt = torch.optim.AdamW(policy.trainable_parameters(), lr=1e-6)
    g = torch.Generator().manual_seed(0)
    deg, cho, rej = (torch.randn(b, t, generator=g) * 0.1 for _ in range(3))
    seeds = torch.arange(b, dtype=torch.int64)
    codes = (None, None)
    if paradigm != "fm":  # the tokens a candidate was sampled with (here: its encoding, computed once)
        frames = torch.ones(b, policy.prepare(cho, None)["mask"].shape[1], dtype=torch.bool)
        codes = (policy.targets(cho, frames), policy.targets(rej, frames))
    with torch.no_grad():
        ref_c, ref_r = stacked_scores(reference, deg, cho, rej, seeds, *codes)

    def sft_step():
        opt.zero_grad()
        policy.sft_loss(torch.cat([deg, deg]), torch.cat([cho, rej])).backward()
        opt.step()

    def dpo_step():
        opt.zero_grad()
        pc, pr = stacked_scores(policy, deg, cho, rej, seeds, *codes)
        if paradigm == "fm":
            with torch.no_grad():
                rc, rr = stacked_scores(reference, deg, cho, rej, seeds)
        else:
            rc, rr = ref_c, ref_r
        loss, _ = dpo_loss(pc, pr, rc, rr, hp.beta)
        loss.backward()
        opt.step()

    sft, dpo = timed_pair(sft_step, dpo_step, repeats)
    return {"paradigm": paradigm, "pairs": b, "sft_s": sft, "dpo_s": dpo, "ratio": dpo / sft,
            "reference": "live" if paradigm == "fm" else "cached"}


def main(argv: list[str]) -> None:
    from gensr.config import load_params

    ap = argparse.ArgumentParser(prog="bench_dpo")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--paradigms", default="ar,mgm,fm")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    torch.set_num_threads(int(params.restorers.threads))
    print(f"{'paradigm':8} {'B':>3} {'SFT 2B (s)':>11} {'DPO B (s)':>10} {'ratio':>6}  reference  target")
    for paradigm in args.paradigms.split(","):
        r = bench_paradigm(params, paradigm, args.repeats)
        target = "<= 1.3x" if paradigm != "fm" else "(report)"
        ok = "" if paradigm == "fm" else ("ok" if r["ratio"] <= 1.3 else "MISSED")
        print(f"{paradigm:8} {r['pairs']:>3} {r['sft_s']:>11.3f} {r['dpo_s']:>10.3f} {r['ratio']:>6.2f}  "
              f"{r['reference']:9}  {target} {ok}", flush=True)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
