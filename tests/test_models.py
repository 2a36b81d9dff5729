"""Restorer interface: seeded candidates, preference scores, checkpoints, tiny Lightning runs."""

from __future__ import annotations

import copy

from pathlib import Path

import numpy as np
import pytest
import torch

from gensr.config import load_params
from gensr.models import PARADIGMS, Restorer, load_restorer
from gensr.models.mgm import cosine_mask_ratio
from gensr.models.restorer import draw_padded, generators
from gensr.models.features import StftConfig, istft, stft, to_waveform, log_magnitude, phase_reference
from gensr.train.codec import load_codec, save_codec, train_codec_model
from gensr.train.data import Clip
from gensr.train.loop import fit

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)  # shared cores: one thread is several times faster than two
SR = 16000
TINY = [
    "codec.model.latent_dim=8", "codec.model.hidden=16", "codec.model.layers=1", "codec.model.n_codebooks=2",
    "codec.model.codebook_size=16", "codec.autoencoder.steps=3", "codec.decoder_finetune.steps=2",
    "codec.autoencoder.batch_size=2", "codec.decoder_finetune.batch_size=2", "codec.autoencoder.crop_seconds=0.5",
    "codec.decoder_finetune.crop_seconds=0.5", "codec.kmeans_frames=400", "codec.kmeans_iters=2",
    *[f"restorers.{p}.train.{k}={v}" for p in PARADIGMS for k, v in
      [("steps", 3), ("batch_size", 2), ("crop_seconds", 0.5), ("warmup_steps", 1)]],
    *[f"restorers.{p}.model.{k}={v}" for p in ("ar", "mgm") for k, v in
      [("d_model", 16), ("heads", 2), ("layers", 1), ("cond_layers", 1)]],
    "restorers.fm.model.hidden=16", "restorers.fm.model.layers=2", "restorers.fm.model.time_dim=8",
    "restorers.fm.model.score_draws=2", "restorers.fm.sampling.ode_steps=3", "restorers.mgm.sampling.steps=3",
    "restorers.fm.sampling.shared_steps=2", "restorers.mgm.sampling.shared_steps=1",
]


def tiny_params(extra=()):
    return load_params(ROOT / "params.yaml", [*TINY, *extra])


def synthetic_clip(seed: int, seconds: float = 1.0) -> Clip:
    """A voiced-like harmonic tone with a moving pitch, and its noisy copy."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = rng.uniform(100, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(1, 3) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    clean = sum(np.sin(k * phase) / k for k in range(1, 8)) * 0.1 * (1 + np.sin(2 * np.pi * 2 * t)) / 2
    noisy = clean + rng.normal(0, 0.03, t.size)
    return Clip(f"clip{seed}", noisy.astype(np.float32), clean.astype(np.float32))


def write_degraded_corpus(data: Path, n: int, seconds, split, text=lambda i: f"text {i}") -> None:
    """data/clean + data/degraded of n synthetic clips (synthetic_clip(i, seconds(i))) and the degraded manifest:
    utterance u<i>, copy u<i>__d0, speaker s<i % 2>, split(i), text(i), seed i."""
    import pyarrow as pa

    from gensr.audio.io import write_wav
    from gensr.storage import write_parquet

    rows = []
    for i in range(n):
        clip = synthetic_clip(i, seconds=seconds(i))
        utt, deg = f"u{i:02d}", f"u{i:02d}__d0"
        write_wav(data / "clean/wav" / f"{utt}.wav", clip.clean, SR)
        write_wav(data / "degraded/wav" / f"{deg}.wav", clip.degraded, SR)
        rows.append({"deg_id": deg, "utt_id": utt, "copy": 0, "path": f"wav/{deg}.wav",
                     "clean_path": f"../clean/wav/{utt}.wav", "text": text(i), "speaker": f"s{i % 2}",
                     "split": split(i), "seed": i})
    write_parquet(pa.Table.from_pylist(rows), data / "degraded/manifest.parquet")


@pytest.fixture(scope="module")
def clips():
    return [synthetic_clip(i) for i in range(6)]


@pytest.fixture(scope="module")
def trained(clips, tmp_path_factory):
    """One tiny codec and one tiny restorer per paradigm, each trained for a few Lightning steps."""
    from gensr.stages.restorers import build_restorer

    params = tiny_params()
    codec, summary = train_codec_model(params.codec, params.restorers.features, clips, SR, seed=0)
    assert np.isfinite(summary["final_loss"])
    codec_path = save_codec(codec, tmp_path_factory.mktemp("codec") / "codec.pt")
    import gensr.stages.restorers as stage

    original = stage.codec_checkpoint
    stage.codec_checkpoint = lambda _params: codec_path
    try:
        models = {}
        for paradigm in PARADIGMS:
            restorer = build_restorer(params, paradigm, clips)
            loop = getattr(params.restorers, paradigm).train
            result = fit(restorer, restorer.sft_loss, restorer.trainable_parameters(), clips, loop, SR, seed=0)
            assert result["steps"] == loop.steps and np.isfinite(result["final_loss"])
            models[paradigm] = restorer
    finally:
        stage.codec_checkpoint = original
    return models


def batch(clips, lengths=None):
    waves = [c.degraded for c in clips]
    n = max(len(w) for w in waves)
    out = torch.zeros(len(waves), n)
    for i, w in enumerate(waves):
        out[i, : len(w)] = torch.from_numpy(w)
    return out


@pytest.mark.parametrize("paradigm", PARADIGMS)
def test_candidates_are_seeded_and_distinct(trained, clips, paradigm):
    model = trained[paradigm]
    x = batch(clips[:2])
    a = model.restore(x, 3, [11, 12, 13])
    b = model.restore(x, 3, [11, 12, 13])
    c = model.restore(x, 3, [21, 22, 23])
    assert a.shape == (2, 3, x.shape[1]) and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    assert torch.equal(a, b), "same seeds must give identical candidates"
    assert not torch.equal(a, c), "different seeds must give different candidates"
    for clip in range(2):  # candidates of one clip differ from each other
        assert not torch.allclose(a[clip, 0], a[clip, 1])


@pytest.mark.parametrize("paradigm", PARADIGMS)
def test_clip_output_does_not_depend_on_its_batch(trained, clips, paradigm):
    model = trained[paradigm]
    long_clip = synthetic_clip(99, seconds=1.3)
    short = clips[0]
    x = torch.zeros(2, len(long_clip.degraded))
    x[0] = torch.from_numpy(long_clip.degraded)
    x[1, : len(short.degraded)] = torch.from_numpy(short.degraded)
    lengths = torch.tensor([len(long_clip.degraded), len(short.degraded)])
    seeds = torch.tensor([[5, 6], [7, 8]])
    together = model.restore(x, 2, seeds, lengths=lengths)
    alone = model.restore(x[1:, : len(short.degraded)], 2, seeds[1:])
    assert torch.allclose(together[1, :, : len(short.degraded)], alone[0], atol=1e-5)
    assert together[1, :, len(short.degraded):].abs().max() == 0


@pytest.mark.parametrize("paradigm", PARADIGMS)
def test_candidate_does_not_depend_on_how_many_share_the_call(trained, clips, paradigm):
    """The per-clip context (and MGM's shared first step) is computed once for N candidates;
    each candidate must still equal the one a single-candidate call with its seed gives."""
    model = trained[paradigm]
    x = batch(clips[:2])
    together = model.restore(x, 4, [3, 4, 5, 6])
    for j, seed in enumerate([3, 4, 5, 6]):
        alone = model.restore(x, 1, [seed])
        assert torch.allclose(together[:, j], alone[:, 0], atol=1e-5), (paradigm, seed)


SHARED = {"fm": {"ode_steps": 3, "shared_steps": 2, "noise_factor": 1.0}, "mgm": {"steps": 3, "shared_steps": 1}}


@pytest.mark.parametrize("paradigm", sorted(SHARED))
def test_shared_steps_keep_candidates_seeded_distinct_and_independent(trained, clips, paradigm):
    """sampling.shared_steps runs the first steps once per clip; candidates must still be seeded,
    distinct, and each equal to the one a single-candidate call with its seed gives."""
    model = copy.deepcopy(trained[paradigm])
    model.sampling.update(SHARED[paradigm])
    x = batch(clips[:2])
    together = model.restore(x, 3, [3, 4, 5])
    assert torch.equal(together, model.restore(x, 3, [3, 4, 5]))
    for j, seed in enumerate([3, 4, 5]):
        assert torch.allclose(together[:, j], model.restore(x, 1, [seed])[:, 0], atol=1e-5), (paradigm, seed)
    for clip in range(2):
        assert not torch.allclose(together[clip, 0], together[clip, 1])


def test_fm_shared_steps_follow_the_noise_free_path_then_add_the_paths_noise(trained, clips):
    """k shared Euler steps from x0 = y, then (1 - k/steps) * sigma * noise_factor * eps per candidate:
    the noise the training path x_t = (1 - t)(y + sigma eps) + t x1 carries at t = k/steps."""
    from gensr.models.fm import endpoint

    model = copy.deepcopy(trained["fm"])
    model.sampling.update(ode_steps=4, shared_steps=2, noise_factor=0.7)
    x = batch(clips[:1])
    seeds = torch.tensor([[8, 9]])
    prep = model.prepare(x, None)
    mask = prep["mask"]
    y = model.norm(prep["cond"]) * mask.unsqueeze(-1)
    with torch.no_grad():
        state = y
        for i in range(2):
            state = state + (endpoint(model.velocity, state, torch.full((1,), i / 4), y, mask) - state) / (4 - i)
        eps = draw_padded(generators(seeds), mask.sum(1).repeat(2), (y.shape[-1],), y.shape[1])
        state = state.repeat(2, 1, 1) + 0.5 * model.noise_scale * 0.7 * eps
        y2, mask2 = y.repeat(2, 1, 1), mask.repeat(2, 1)
        for i in range(2, 4):
            state = state + (endpoint(model.velocity, state, torch.full((2,), i / 4), y2, mask2) - state) / (4 - i)
        expected = model.norm.inverse(state)
        got = model.generate(model.context(prep["cond"], mask), mask, generators(seeds), 2)
    assert torch.allclose(got, expected, atol=1e-6)


def test_mgm_shared_steps_give_every_candidate_the_same_greedy_tokens(trained, clips):
    """The tokens revealed by the greedy shared steps are each position's most likely code, and
    every candidate of the clip keeps them; the rest is sampled per candidate."""
    model = copy.deepcopy(trained["mgm"])
    model.sampling.update(steps=4, shared_steps=2)
    x = batch(clips[:1])
    _, codes = model.restore(x, 3, [1, 2, 3], return_codes=True)
    codes = codes[0]  # [N, frames, K]
    same = (codes == codes[:1]).all(0)
    revealed = 1 - float(cosine_mask_ratio(torch.tensor(2 / 4)))  # share revealed after the shared steps
    assert same.float().mean() >= revealed - 1 / same.numel()
    assert not torch.equal(codes[0], codes[1])
    plain = copy.deepcopy(trained["mgm"])
    plain.sampling.update(steps=4, shared_steps=0)
    _, plain_codes = plain.restore(x, 3, [1, 2, 3], return_codes=True)
    assert (plain_codes[0] == plain_codes[0, :1]).all(0).float().mean() < same.float().mean()
    # one greedy step, computed independently: the most confident argmax codes of the all-hidden input
    model.sampling.update(steps=2, shared_steps=1)
    _, codes = model.restore(x, 3, [1, 2, 3], return_codes=True)
    prep = model.prepare(x, None)
    with torch.no_grad():
        cond = model.context(prep["cond"], prep["mask"])["cond"]
        hidden_all = torch.full((*prep["mask"].shape, model.n_codebooks), model.mask_id)
        log_p, best = torch.log_softmax(model.logits(cond, hidden_all, prep["mask"]), -1).max(-1)
    n = log_p.numel()
    keep = n - int(np.floor(n * float(cosine_mask_ratio(torch.tensor(0.5)))))
    revealed = torch.zeros(n, dtype=torch.bool)
    revealed[log_p.flatten().argsort(descending=True)[:keep]] = True
    revealed = revealed.view_as(log_p)[0]
    for j in range(3):
        assert torch.equal(codes[0, j][revealed], best[0][revealed])


@pytest.mark.parametrize("key,value", [("restorers.fm.sampling.shared_steps", 4), ("restorers.mgm.sampling.shared_steps", 4)])
def test_shared_steps_must_leave_a_step_per_candidate(key, value):
    with pytest.raises(ValueError, match="shared_steps"):
        tiny_params([f"{key}={value}", "restorers.fm.sampling.ode_steps=4", "restorers.mgm.sampling.steps=4"])


@pytest.mark.parametrize("paradigm", PARADIGMS)
def test_restore_can_return_the_sampled_codes(trained, clips, paradigm):
    """return_codes gives the same waveforms plus the tokens they were decoded from (token paradigms);
    scoring those tokens is what DPO does, and a re-encoding of the waveform is not the same sequence."""
    model = trained[paradigm]
    x = batch(clips[:2])
    plain = model.restore(x, 2, [5, 6])
    wave, codes = model.restore(x, 2, [5, 6], return_codes=True)
    assert torch.equal(wave, plain)
    if paradigm == "fm":
        assert codes is None
        return
    frames = model.prepare(x, None)["mask"].shape[1]
    assert codes.shape == (2, 2, frames, model.n_codebooks) and codes.dtype == torch.long
    assert 0 <= int(codes.min()) and int(codes.max()) < model.codebook_size
    deg = x.repeat_interleave(2, 0)
    flat_wave, flat_codes = wave.reshape(4, -1), codes.reshape(4, frames, -1)
    seeds = torch.arange(4)
    with torch.no_grad():
        re_encoded = model.targets(flat_wave, torch.ones(4, frames, dtype=torch.bool))
        by_wave = model.preference_score(deg, flat_wave, seeds)
        assert torch.allclose(model.preference_score(deg, flat_wave, seeds, codes=re_encoded), by_wave)
        by_codes = model.preference_score(deg, flat_wave, seeds, codes=flat_codes)
        # unknown entries (-1) are taken from the re-encoding
        partial = flat_codes.clone()
        partial[:, frames // 2 :] = -1
        mixed = torch.cat([flat_codes[:, : frames // 2], re_encoded[:, frames // 2 :]], dim=1)
        assert torch.allclose(model.preference_score(deg, flat_wave, seeds, codes=partial),
                              model.preference_score(deg, flat_wave, seeds, codes=mixed))
    assert not torch.equal(re_encoded, flat_codes) and not torch.allclose(by_codes, by_wave)
    with pytest.raises(ValueError, match="expected"):
        model.preference_score(deg, flat_wave, seeds, codes=flat_codes[:, :-1])


def test_sampler_draws_many_tokens_from_shared_logits_like_one_at_a_time():
    from gensr.models.token_restorer import sample_from_logits

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 16, generator=g)
    uniforms = torch.rand(3, 5, 4, generator=g)
    for temperature, top_k in ((1.0, 0), (0.7, 3)):
        tokens, log_p = sample_from_logits(logits, uniforms, temperature, top_k)
        assert tokens.shape == log_p.shape == (3, 5, 4)
        for j in range(4):
            one, one_lp = sample_from_logits(logits, uniforms[..., j], temperature, top_k)
            assert torch.equal(tokens[..., j], one) and torch.equal(log_p[..., j], one_lp)
        if top_k:  # only the top-k tokens of each distribution are ever drawn
            allowed = logits.topk(top_k, dim=-1).indices
            assert (tokens.unsqueeze(-1) == allowed.unsqueeze(-2)).any(-1).all()
        # the returned log-probs are the untempered model log-probs of the drawn tokens
        assert torch.allclose(log_p, torch.log_softmax(logits, -1).gather(-1, tokens))


@pytest.mark.parametrize("paradigm", PARADIGMS)
def test_preference_score_deterministic_differentiable_and_equal_to_reference(trained, clips, paradigm):
    policy = trained[paradigm]
    reference = copy.deepcopy(policy)
    deg, target = batch(clips[:3]), torch.from_numpy(np.stack([c.clean for c in clips[:3]]))
    seeds = torch.tensor([3, 4, 5], dtype=torch.int64)
    s1 = policy.preference_score(deg, target, seeds)
    s2 = policy.preference_score(deg, target, seeds)
    assert s1.shape == (3,) and torch.isfinite(s1).all()
    assert torch.equal(s1, s2)
    assert torch.equal(s1, reference.preference_score(deg, target, seeds))
    s1.sum().backward()
    grads = [p.grad for p in policy.trainable_parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    policy.zero_grad()
    other = policy.preference_score(deg, target, torch.tensor([30, 40, 50]))
    if paradigm != "ar":  # AR's score is exact (no randomness); MGM/FM depend on the shared draw
        assert not torch.equal(s1.detach(), other.detach())
    # a different target gets a different score under the same draw
    assert not torch.equal(s1.detach(), policy.preference_score(deg, deg, seeds).detach())


@pytest.mark.parametrize("paradigm", ["ar", "mgm"])
def test_token_preference_score_at_a_temperature_is_the_tempered_log_prob(trained, clips, paradigm):
    model = copy.deepcopy(trained[paradigm])
    model.eval()
    deg, target = batch(clips[:2]), torch.from_numpy(np.stack([c.clean for c in clips[:2]]))
    seeds = torch.tensor([7, 8], dtype=torch.int64)
    own = model.preference_score(deg, target, seeds)
    model.score_temperature = 0.5  # dpo.<p>.score_temperature: sampling sets the checkpoint's sampling temperature
    tempered = model.preference_score(deg, target, seeds)
    assert torch.isfinite(tempered).all() and not torch.allclose(own, tempered)
    cond, codes, mask = model.paired_inputs(deg, target, None)
    if paradigm == "ar":
        logits = model._logits(model.transformer(model._frame_inputs(cond, codes), mask), codes)
        keep = mask.unsqueeze(-1).expand_as(codes)
    else:  # the same seeded mask as the score draws
        gens = generators(seeds)
        ratio = cosine_mask_ratio(torch.stack([torch.rand((), generator=g) for g in gens]))
        keep = model._draw_mask(ratio, draw_padded(gens, mask.sum(1), (model.n_codebooks,), mask.shape[1], kind="uniform"), mask)
        logits = model.logits(cond, codes.masked_fill(keep, model.mask_id), mask)
    expected = (torch.log_softmax(logits / 0.5, -1).gather(-1, codes.unsqueeze(-1)).squeeze(-1) * keep).sum(dim=(1, 2))
    assert torch.allclose(tempered, expected, atol=1e-4)
    model.score_temperature = 1.0
    assert torch.equal(model.preference_score(deg, target, seeds), own)


@pytest.mark.parametrize("paradigm", PARADIGMS)
def test_checkpoint_round_trip_weights_only(trained, clips, paradigm, tmp_path):
    model = trained[paradigm]
    path = model.save(tmp_path / "restorer.pt")
    payload = torch.load(path, weights_only=True)
    assert payload["paradigm"] == paradigm and "config" in payload
    loaded = load_restorer(path)
    assert type(loaded) is type(model) and loaded.paradigm == paradigm
    assert isinstance(Restorer.load(path), Restorer)
    x = batch(clips[:2])
    assert torch.equal(loaded.restore(x, 2, [1, 2]), model.restore(x, 2, [1, 2]))
    # equal weights give equal bytes, whatever the file is called (checkpoint hashes are recorded)
    other = model.save(tmp_path / "elsewhere" / "copy.pt")
    assert other.read_bytes() == path.read_bytes()


def test_wrong_seed_count_is_a_clear_error(trained, clips):
    with pytest.raises(ValueError, match="n_candidates"):
        trained["fm"].restore(batch(clips[:1]), 3, [1, 2])


def test_codec_round_trip_and_stft_identity(clips, tmp_path):
    cfg = StftConfig(512, 256, 1e-5)
    x = torch.from_numpy(clips[0].clean)[None]
    # magnitude + own phase reconstructs the input (the front end loses nothing by itself)
    y = to_waveform(log_magnitude(stft(x, cfg), cfg), phase_reference(x, cfg), x.shape[-1], cfg)
    assert torch.allclose(x, y, atol=1e-4)
    params = tiny_params()
    codec, _ = train_codec_model(params.codec, params.restorers.features, clips, SR, seed=0)
    loaded = load_codec(save_codec(codec, tmp_path / "codec.pt"))
    assert torch.equal(loaded.encode(x), codec.encode(x))
    codes = codec.encode(x)
    assert codes.shape[-1] == params.codec.model.n_codebooks and codes.max() < params.codec.model.codebook_size


@pytest.mark.parametrize("n_fft,hop", [(512, 256), (512, 128), (400, 160)])
def test_istft_equals_torch_istft(n_fft, hop):
    """The overlap-add iSTFT is torch.istft's arithmetic (hop | n_fft), or torch.istft itself (otherwise),
    on arbitrary (inconsistent) spectra and with leading batch dims."""
    cfg = StftConfig(n_fft, hop, 1e-5)
    g = torch.Generator().manual_seed(3)
    spec = torch.complex(torch.randn(2, 3, 40, n_fft // 2 + 1, generator=g), torch.randn(2, 3, 40, n_fft // 2 + 1, generator=g))
    n = 39 * hop
    ref = torch.istft(spec.reshape(6, 40, -1).transpose(1, 2), n_fft, hop, window=torch.hann_window(n_fft),
                      center=True, length=n).reshape(2, 3, n)
    assert torch.allclose(istft(spec, cfg, n), ref, atol=1e-6, rtol=0)


def test_codec_decoder_reads_the_degraded_side_input(clips):
    """Phase 3 trains the side branch (zero at init), so the decoded magnitude depends on the degraded input;
    clean-only clips are refused with a message, not silently trained without a side input."""
    params = tiny_params()
    codec, _ = train_codec_model(params.codec, params.restorers.features, clips, SR, seed=0)
    assert codec.side.weight.abs().sum() > 0
    clean = torch.from_numpy(clips[0].clean)[None]
    a = codec.resynthesize(clean, torch.from_numpy(clips[0].degraded)[None], phase_from=clean)
    b = codec.resynthesize(clean, torch.from_numpy(clips[1].degraded)[None], phase_from=clean)
    assert a.shape == clean.shape and not torch.allclose(a, b)
    with pytest.raises(ValueError, match="degraded"):
        train_codec_model(params.codec, params.restorers.features, [Clip("c", None, clips[0].clean)], SR, seed=0)


def test_a_fit_prints_neither_lightnings_tip_nor_its_internal_deprecation(trained, clips, capfd, caplog):
    """Every Lightning fit of a `make demo` printed an advertising tip and torch's LeafSpec deprecation raised in
    Lightning's own code (20 times each); gensr.train.distributed.quiet_lightning drops exactly those two."""
    import logging
    import warnings

    caplog.set_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero")  # pytest hides INFO otherwise
    restorer = trained["fm"]
    loop = tiny_params().restorers.fm.train.model_copy(update={"steps": 2})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(restorer, restorer.sft_loss, restorer.trainable_parameters(), clips, loop, SR, seed=0)
    out = capfd.readouterr()
    printed = out.out + out.err + caplog.text + "\n".join(str(w.message) for w in caught)
    assert "max_steps=2" in caplog.text  # Lightning's other INFO lines still get through
    assert "💡 Tip" not in printed and "litlogger" not in printed
    assert "LeafSpec" not in printed
