"""Metric correctness against the reference libraries, ceilings, immutability, NaN reasons."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from gensr.metrics.base import Clip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """16 clean eSpeak utterances (8 voices) from the real corpus stage."""
    from gensr.config import load_params
    from gensr.stages.corpus import build_clean_corpus

    from conftest import PARAMS

    out = tmp_path_factory.mktemp("clean")
    build_clean_corpus(load_params(PARAMS, ["corpus.n_utterances=16"]), out)
    manifest = pd.read_parquet(out / "manifest.parquet").sort_values("utt_id").reset_index(drop=True)
    audio = {r.utt_id: sf.read(out / r.path, dtype="float32")[0] for r in manifest.itertuples()}
    return manifest, audio


@pytest.fixture(scope="module")
def metrics_params():
    from gensr.config import load_params

    from conftest import PARAMS

    return load_params(PARAMS).metrics


def noisy(x: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(len(x))
    noise *= np.sqrt(np.mean(x.astype(np.float64) ** 2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    return (x + noise).astype(np.float32)


def clip_of(clean: np.ndarray, candidate: np.ndarray, clip_id="c", text=None, key="ref") -> Clip:
    return Clip(clip_id, candidate, 16000, reference=clean, reference_rate=16000, reference_key=key, text=text)


def test_pesq_and_estoi_equal_the_libraries(corpus):
    from pesq import pesq
    from pystoi import stoi

    from gensr.metrics.estoi import Estoi
    from gensr.metrics.pesq_wb import PesqWB

    manifest, audio = corpus
    for i, utt in enumerate(manifest.utt_id[:3]):
        clean = audio[utt]
        degraded = noisy(clean, 5.0 + 5 * i, seed=i)
        clip = clip_of(clean, degraded)
        ours_pesq = PesqWB().score_batch([clip])[0]["pesq_wb"].value
        ours_estoi = Estoi().score_batch([clip])[0]["estoi"].value
        assert ours_pesq == pesq(16000, clean, degraded, "wb")
        assert ours_estoi == pytest.approx(stoi(clean, degraded, 16000, extended=True), abs=1e-12)
        assert 1.0 < ours_pesq < 4.0 and 0.0 < ours_estoi < 1.0


def test_si_sdr_matches_least_squares_projection():
    from gensr.metrics.si_sdr import si_sdr

    rng = np.random.default_rng(0)
    s = rng.standard_normal(16000)
    for scale, noise_level in [(1.0, 0.1), (0.3, 1.0), (-2.0, 0.01)]:
        estimate = scale * s + noise_level * rng.standard_normal(16000) + 0.05  # offset: SI-SDR is zero-mean
        s0, e0 = s - s.mean(), estimate - estimate.mean()
        alpha = np.linalg.lstsq(s0[:, None], e0, rcond=None)[0][0]
        expected = 10 * np.log10(np.sum((alpha * s0) ** 2) / np.sum((e0 - alpha * s0) ** 2))
        assert si_sdr(s, estimate) == pytest.approx(expected, abs=1e-9)


def test_batched_dnsmos_equals_speechmos(corpus, metrics_params):
    """Lengths chosen to hit 4 windows, 7 windows (repeat-padded 1 s clip) and the wrapper's
    skipped windows (idx 7, 8 of a 17.5 s clip)."""
    from speechmos import dnsmos

    from gensr.metrics.dnsmos import Dnsmos

    manifest, audio = corpus
    a, b = audio[manifest.utt_id[0]], audio[manifest.utt_id[5]]
    long = np.concatenate([a, b, a, b, a, b])[: int(17.5 * 16000)]
    clips = [noisy(a, 10.0, 1), noisy(b, 20.0, 2)[:16000], np.clip(long, -1, 1)]
    scorer = Dnsmos(metrics_params.dnsmos)
    scorer.setup()
    ours = scorer.score_batch([Clip(f"c{i}", x, 16000) for i, x in enumerate(clips)])
    for x, got in zip(clips, ours):
        want = dnsmos.run(x.copy(), 16000)
        for key, name in [("sig_mos", "dnsmos_sig"), ("bak_mos", "dnsmos_bak"), ("ovrl_mos", "dnsmos_ovrl"), ("p808_mos", "dnsmos_p808")]:
            assert got[name].value == pytest.approx(float(want[key]), abs=1e-3), name


def test_dnsmos_windows_follow_the_wrapper_arithmetic():
    from gensr.metrics.dnsmos import repeated

    _, kept = repeated(np.ones(int(17.5 * 16000), np.float32))
    assert kept == [0, 1, 2, 3, 4, 5, 6]  # int((idx + 9.01) * fs) is one sample short for idx 7, 8
    _, kept = repeated(np.ones(48000, np.float32))  # 3 s -> repeated to 12 s
    assert kept == [0, 1, 2]


def test_clean_against_itself_gives_the_ceilings(corpus, metrics_params):
    from gensr.metrics.registry import build_scorers

    manifest, audio = corpus
    params = metrics_params.model_copy(update={"names": ["pesq_wb", "estoi", "si_sdr", "mel_distance", "speaker_cosine"]})
    clips = [clip_of(audio[u], audio[u], clip_id=u, key=u) for u in manifest.utt_id[:4]]
    scores = {}
    for scorer in build_scorers(params):
        scorer.setup()
        for result in scorer.score_batch(clips):
            for name, score in result.items():
                scores.setdefault(name, []).append(score.value)
    assert np.allclose(scores["pesq_wb"], 4.64, atol=0.01)
    assert np.allclose(scores["estoi"], 1.0, atol=1e-6)
    assert min(scores["si_sdr"]) > 100
    assert np.allclose(scores["mel_distance"], 0.0)
    assert np.allclose(scores["speaker_cosine"], 1.0, atol=1e-5)


def test_scorers_cannot_change_the_audio(corpus):
    manifest, audio = corpus
    x = audio[manifest.utt_id[0]]
    clip = clip_of(x, x)
    with pytest.raises(ValueError):
        clip.audio[0] = 1.0
    with pytest.raises(ValueError):
        clip.reference_at(16000)[0] = 1.0
    down = clip.audio_at(8000)  # a derived copy at another rate; the original stays at 16 kHz
    assert abs(len(down) - len(x) / 2) <= 1 and len(clip.audio) == len(x) and not down.flags.writeable


def test_failures_are_nan_with_reasons(corpus, metrics_params):
    from gensr.metrics.pesq_wb import PesqWB
    from gensr.metrics.asr import WordErrorRate
    from gensr.metrics.estoi import Estoi

    manifest, audio = corpus
    x = audio[manifest.utt_id[0]]
    silent_reference = np.zeros_like(x)
    result = PesqWB().score_batch([clip_of(silent_reference, x)])[0]["pesq_wb"]
    assert np.isnan(result.value) and "NoUtterances" in result.reason
    short = Estoi().score_batch([clip_of(x[:2000], x[:2000])])[0]["estoi"]
    assert np.isnan(short.value) and "too little speech" in short.reason
    no_ref = PesqWB().score_batch([Clip("c", x, 16000, reference_error="ref.wav: missing")])[0]["pesq_wb"]
    assert np.isnan(no_ref.value) and "ref.wav: missing" in no_ref.reason
    no_text = WordErrorRate(metrics_params.content).score_batch([clip_of(x, x)])[0]["wer"]
    assert np.isnan(no_text.value) and "transcript" in no_text.reason


def test_registry_metadata_is_complete():
    from gensr.metrics import registry

    assert set(registry.SPECS) == set(registry.METRIC_GROUPS)
    for name in registry.METRIC_NAMES:
        spec = registry.get(name)
        assert spec.dimension in ("quality", "fidelity", "content", "timbre")
        assert spec.valid_range[0] < spec.valid_range[1]
    assert {registry.get(n).dimension for n in registry.METRIC_NAMES} == {"quality", "fidelity", "content", "timbre"}
    with pytest.raises(KeyError, match="known"):
        registry.get("nisqa")


def test_to_wide_pivots_one_row_per_clip():
    from gensr.metrics import to_wide

    long = pd.DataFrame({
        "clip_id": ["b", "a", "a", "b"], "metric": ["wer", "pesq_wb", "wer", "pesq_wb"],
        "value": [0.5, 3.0, np.nan, 2.0], "reason": [None, None, "x", None], "backend": "", "version": "",
    })
    wide = to_wide(long)
    assert list(wide.columns) == ["clip_id", "pesq_wb", "wer"]
    assert list(wide.clip_id) == ["a", "b"] and np.isnan(wide.wer[0]) and wide.pesq_wb[1] == 2.0


def test_an_unexpected_error_costs_only_its_clip(corpus):
    from gensr.metrics.si_sdr import SiSdr
    from gensr.metrics.suite import scored_batch

    class Fragile(SiSdr):
        def score_batch(self, clips):
            if any(c.clip_id == "bad" for c in clips):
                raise RuntimeError("backend exploded")
            return super().score_batch(clips)

    manifest, audio = corpus
    x = audio[manifest.utt_id[0]]
    out = scored_batch(Fragile(), [clip_of(x, x, "good"), clip_of(x, x, "bad")])
    assert out[0]["si_sdr"].value > 100
    assert np.isnan(out[1]["si_sdr"].value) and "backend exploded" in out[1]["si_sdr"].reason


def test_transcripts_do_not_depend_on_what_was_decoded_before(corpus, metrics_params):
    from gensr.metrics.asr import PocketsphinxRecognizer

    manifest, audio = corpus
    a, b = (audio[u] for u in manifest.utt_id[:2])
    noisy_a = noisy(a, 5.0, 0)
    recognizer = PocketsphinxRecognizer(metrics_params.content)
    recognizer.load()
    first = recognizer.transcribe(noisy_a, "a")
    recognizer.transcribe(noisy(b, -5.0, 1), "b")
    recognizer.transcribe(np.zeros(32000, np.float32), "silence")
    assert recognizer.transcribe(noisy_a, "a") == first
