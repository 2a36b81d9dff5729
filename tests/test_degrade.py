"""Degradation simulator: each type's effect, composition, determinism, the stage and the asset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.signal import correlate, lfilter, welch

from gensr.audio.io import read_wav, write_wav
from gensr.config import ConfigError, load_params
from gensr.corpus import degrade as D
from gensr.storage import write_parquet

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


def params(overrides=None):
    return load_params(ROOT / "params.yaml", overrides or {})


def speechlike(seed: int, seconds: float = 2.0, f0: float = 120.0) -> np.ndarray:
    """Harmonic, syllable-modulated signal with pauses: broadband, non-stationary, no exact zeros."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    voiced = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) / h for h in range(1, 30))
    breath = lfilter([1], [1, -0.7], rng.standard_normal(len(t))) * 0.05
    envelope = 0.05 + np.maximum(np.sin(2 * np.pi * 3 * t), 0) ** 2
    x = (voiced + breath) * envelope
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def modulated_noise(seed: int, seconds: float = 2.0) -> np.ndarray:
    """Aperiodic, so its autocorrelation has one peak: the right probe for alignment (lag) tests."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = lfilter([1], [1, -0.8], rng.standard_normal(len(t))) * (0.1 + np.maximum(np.sin(2 * np.pi * 3 * t), 0))
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def snr_db(clean, degraded) -> float:
    clean, noise = clean.astype(np.float64), degraded.astype(np.float64) - clean
    return 10 * np.log10(np.sum(clean**2) / np.sum(noise**2))


def best_lag(reference, other, max_lag: int = 400) -> int:
    """Lag (samples) of `other` behind `reference` that maximizes their cross-correlation."""
    corr = correlate(other.astype(np.float64), reference.astype(np.float64), mode="full", method="fft")
    lags = np.arange(-len(reference) + 1, len(other))
    window = np.abs(lags) <= max_lag
    return int(lags[window][np.argmax(corr[window])])


def schroeder_rt60(rir: np.ndarray, sr: int) -> float:
    """Independent of the library: EDC by backward integration, T20 line fit, x3."""
    energy = rir.astype(np.float64) ** 2
    edc = np.cumsum(energy[::-1])[::-1]
    edc_db = 10 * np.log10(edc / edc[0])
    idx = np.where((edc_db <= -5) & (edc_db >= -25))[0]
    slope, _ = np.polyfit(idx / sr, edc_db[idx], 1)
    return -60 / slope


# ------------------------------------------------------------------ additive noise


@pytest.fixture
def babble_pool():
    clips = {f"s{s}_u{u}": (f"spk{s}", speechlike(10 * s + u, 1.3, 100 + 25 * s)) for s in range(4) for u in range(3)}
    return D.BabblePool.from_arrays(clips)


@pytest.fixture
def noise_dir(tmp_path):
    folder = tmp_path / "noises"
    rng = np.random.default_rng(3)
    hum = 0.1 * np.sin(2 * np.pi * 60 * np.arange(SR) / SR) + 0.01 * rng.standard_normal(SR)
    write_wav(folder / "hum.wav", hum, SR)
    write_wav(folder / "sub" / "fan.wav", lfilter([1], [1, -0.95], rng.standard_normal(3 * SR)) * 0.05, SR)
    write_wav(folder / "short8k.wav", rng.standard_normal(800).astype(np.float32) * 0.1, 8000)  # resampled on read
    (folder / "broken.wav").write_text("not audio")
    write_wav(folder / "zeros.wav", np.zeros(SR, dtype=np.float32), SR)
    return folder


@pytest.mark.parametrize("kind", ["white", "pink", "brown", "babble", "user"])
def test_noise_hits_target_snr(kind, babble_pool, noise_dir):
    p = params({"degrade.noise.kinds": [kind], "degrade.noise.user_dir": str(noise_dir)}).degrade.noise
    clean = speechlike(0, 2.0)
    for seed in range(4):
        noisy, applied = D.add_noise(clean, SR, np.random.default_rng(seed), p, speaker="spk1", babble_pool=babble_pool,
                                     ingest=params().ingest)
        assert noisy.dtype == np.float32 and len(noisy) == len(clean)
        assert applied["kind"] == kind and p.snr_db[0] <= applied["snr_db"] <= p.snr_db[1]
        assert abs(snr_db(clean, noisy) - applied["snr_db"]) < 0.5
        if kind == "babble":
            talkers = [t["utt_id"] for t in applied["talkers"]]
            assert len(talkers) == len(set(talkers)) == p.babble_talkers
            assert all(babble_pool.speakers[u] != "spk1" for u in talkers)
        if kind == "user":
            assert applied["file"] in {"hum.wav", "sub/fan.wav", "short8k.wav"}


def test_user_noise_folder_quarantines_bad_files(noise_dir):
    folder = D.AudioFolder(noise_dir, SR, "degrade.noise.user_dir", params().ingest)
    assert folder.files == ["hum.wav", "short8k.wav", "sub/fan.wav"]
    reasons = dict((Path(p).name, r) for p, r in folder.rejected)
    assert reasons["broken.wav"].startswith("unreadable") and reasons["zeros.wav"].startswith("silent")
    with pytest.raises(ValueError, match="degrade.noise.user_dir"):
        D.AudioFolder(noise_dir / "missing", SR, "degrade.noise.user_dir", params().ingest)


def test_babble_without_other_speakers_names_the_param():
    pool = D.BabblePool.from_arrays({"a": ("spk1", speechlike(1))})
    p = params({"degrade.noise.kinds": ["babble"]}).degrade.noise
    with pytest.raises(ValueError, match="degrade.noise.kinds"):
        D.add_noise(speechlike(0), SR, np.random.default_rng(0), p, speaker="spk1", babble_pool=pool)


@pytest.mark.parametrize("kind,exponent", [("white", 0.0), ("pink", 1.0), ("brown", 2.0)])
def test_colored_noise_spectral_slope(kind, exponent):
    noise = D.colored_noise(8 * SR, SR, np.random.default_rng(0), exponent, min_hz=50.0)
    freqs, psd = welch(noise, SR, nperseg=2048)
    band = (freqs >= 200) & (freqs <= 6000)
    slope = np.polyfit(np.log10(freqs[band]), np.log10(psd[band]), 1)[0]
    assert abs(slope + exponent) < 0.15


# ------------------------------------------------------------------ reverb


@pytest.mark.parametrize("rt60", [0.2, 0.4, 0.6])
def test_simulated_rir_has_target_rt60(rt60):
    rir = D.simulated_rir(SR, np.random.default_rng(1), rt60, drr_db=5.0)
    assert np.argmax(np.abs(rir)) == 0 and rir[0] == 1.0
    assert abs(schroeder_rt60(rir, SR) - rt60) / rt60 < 0.1
    direct, tail = rir[0] ** 2, np.sum(rir[1:] ** 2)
    assert abs(10 * np.log10(direct / tail) - 5.0) < 1e-6


@pytest.mark.parametrize("method", ["tail", "image_source"])
def test_reverb_output_is_aligned_with_clean(method):
    # A white probe: its autocorrelation is a spike, so the cross-correlation peak is the RIR's
    # strongest tap, the direct path. (With low-passed probes, a dense cluster of same-sign early
    # reflections can out-correlate a direct path that is 10 dB below the reverb.)
    clean = (np.random.default_rng(2).standard_normal(2 * SR) * 0.1).astype(np.float32)
    p = params({"degrade.reverb.methods": [method]}).degrade.reverb
    for seed in range(3):
        wet, applied = D.reverberate(clean, SR, np.random.default_rng(seed), p)
        assert len(wet) == len(clean) and applied["source"] == "simulated" and applied["method"] == method
        target = applied.get("rt60_target_s", applied["rt60_s"])
        assert p.rt60_s[0] <= target <= p.rt60_s[1]
        assert best_lag(clean, wet) == 0
        assert snr_db(clean, wet) < 20  # the tail is really there
        if method == "image_source":
            assert p.distance_m[0] - 1e-9 <= applied["distance_m"] <= p.distance_m[1] + 1e-9
            room, margin = np.array(applied["room_m"]), p.wall_margin_m
            for point in (applied["source_m"], applied["mic_m"]):
                assert np.all(np.array(point) >= margin) and np.all(np.array(point) <= room - margin)


@pytest.mark.parametrize("rt60", [0.25, 0.5])
def test_image_source_rir_is_calibrated_to_target_rt60(rt60):
    room, source, mic = [6.0, 4.5, 3.0], [1.2, 2.0, 1.5], [4.1, 3.0, 1.2]
    rir, direct, measured = D.calibrated_image_source_rir(SR, rt60, room, source, mic)
    distance = np.linalg.norm(np.subtract(source, mic))
    assert direct == round(distance / 343.0 * SR) and rir[direct] == 1.0 and np.all(rir[:direct] == 0)
    assert np.all(np.abs(rir[direct + 1 : direct + 20]) < 1)  # nothing beats the direct path early on
    assert abs(schroeder_rt60(rir[direct:], SR) - rt60) / rt60 < 0.05
    assert abs(measured - schroeder_rt60(rir[direct:], SR)) < 1e-6
    # the first reflection arrives when the geometry says: the floor image of the source
    floor_image = np.array([source[0], source[1], -source[2]])
    first = round(np.linalg.norm(floor_image - np.array(mic)) / 343.0 * SR)
    assert rir[first] > 0.1


def test_image_source_calibration_holds_across_random_rooms():
    p = params({"degrade.reverb.methods": ["image_source"]}).degrade.reverb
    impulse = np.zeros(SR // 10, dtype=np.float32)
    impulse[0] = 1.0
    for seed in range(20):
        _, applied = D.reverberate(impulse, SR, np.random.default_rng(seed), p)
        assert abs(applied["rt60_s"] / applied["rt60_target_s"] - 1) <= 0.02


def test_user_rir_is_aligned_on_its_direct_path(tmp_path):
    rir = np.concatenate([np.zeros(137), 0.4 * D.simulated_rir(SR, np.random.default_rng(5), 0.35, 3.0)])
    write_wav(tmp_path / "rirs" / "room.wav", rir, SR)
    p = params({"degrade.reverb.user_rir_dir": str(tmp_path / "rirs")}).degrade.reverb
    clean = modulated_noise(3)
    wet, applied = D.reverberate(clean, SR, np.random.default_rng(0), p, params().ingest)
    assert applied["source"] == "user" and applied["file"] == "room.wav"
    assert abs(applied["rt60_s"] - 0.35) < 0.05
    assert len(wet) == len(clean) and best_lag(clean, wet) == 0


# ------------------------------------------------------------------ clipping, band limit, packet loss


def test_clipping_caps_at_threshold_of_peak():
    x = speechlike(4)
    p = params().degrade.clipping
    y, applied = D.clip(x, SR, np.random.default_rng(0), p)
    level = applied["threshold"] * np.abs(x).max()
    assert p.threshold[0] <= applied["threshold"] <= p.threshold[1]
    assert np.isclose(applied["level"], level)
    assert np.abs(y).max() <= level + 1e-7
    below = np.abs(x) < level
    assert np.array_equal(y[below], x[below]) and np.mean(~below) > 0.001


@pytest.mark.parametrize("rate", [4000, 8000])
def test_bandlimit_removes_energy_above_cutoff(rate):
    x = np.random.default_rng(0).standard_normal(2 * SR + 7).astype(np.float32) * 0.1
    p = params({"degrade.bandlimit.rates_hz": [rate]}).degrade.bandlimit
    y, applied = D.bandlimit(x, SR, np.random.default_rng(0), p)
    assert applied == {"type": "bandlimit", "rate_hz": rate} and len(y) == len(x)
    power = np.abs(np.fft.rfft(y)) ** 2
    freqs = np.fft.rfftfreq(len(y), 1 / SR)
    assert power[freqs > rate / 2].sum() / power.sum() < 0.01
    assert power[freqs < rate / 2 * 0.9].sum() / (np.abs(np.fft.rfft(x)) ** 2)[freqs < rate / 2 * 0.9].sum() > 0.95
    assert best_lag(x, y) == 0


def test_bandlimit_rejects_rate_above_audio_rate():
    p = params({"degrade.bandlimit.rates_hz": [16000]}).degrade.bandlimit
    with pytest.raises(ValueError, match="degrade.bandlimit.rates_hz"):
        D.bandlimit(speechlike(0), SR, np.random.default_rng(0), p)


def test_packet_loss_zeroes_exactly_the_stated_frames():
    x = speechlike(5, 2.01) + 0.01  # no exact zeros in the input
    p = params({"degrade.packet_loss.loss_rate": [0.1, 0.2]}).degrade.packet_loss
    y, applied = D.packet_loss(x, SR, np.random.default_rng(0), p)
    frame = applied["frame_samples"]
    assert frame == 320
    n_frames = -(-len(x) // frame)
    dropped = np.zeros(len(x), dtype=bool)
    for i in applied["dropped_frames"]:
        dropped[i * frame : (i + 1) * frame] = True
    assert np.all(y[dropped] == 0) and np.array_equal(y[~dropped], x[~dropped])
    assert applied["loss_rate"] == len(applied["dropped_frames"]) / n_frames
    assert 0.09 < applied["loss_rate"] < 0.21


# ------------------------------------------------------------------ codecs


@pytest.mark.parametrize("bits", [2, 6, 10])
def test_pcm_quantize_error_and_levels(bits):
    step = 1 / 2 ** (bits - 1)
    ramp = np.linspace(-1, 1, 1 << 16)
    q = D.pcm_quantize(ramp, bits)
    assert len(np.unique(q)) == 2**bits
    inside = ramp <= 1 - step
    assert np.max(np.abs(q - ramp)[inside]) <= step / 2 + 1e-12


@pytest.mark.parametrize("bits", [4, 8])
def test_mulaw_error_and_levels(bits):
    step = 1 / 2 ** (bits - 1)
    ramp = D.mulaw_expand(np.linspace(-1, 1, 1 << 16), bits)  # uniform in the companded domain
    y = D.mulaw_expand(D.pcm_quantize(D.mulaw_compress(ramp, bits), bits), bits)
    assert len(np.unique(y)) == 2**bits
    inside = D.mulaw_compress(ramp, bits) <= 1 - step
    err = np.abs(D.mulaw_compress(y, bits) - D.mulaw_compress(ramp, bits))
    assert np.max(err[inside]) <= step / 2 + 1e-9
    x = speechlike(6)  # small amplitudes get small absolute errors: that is what companding is for
    yx = D.mulaw_expand(D.pcm_quantize(D.mulaw_compress(x, bits), bits), bits)
    quiet = np.abs(x) < 0.01
    assert np.max(np.abs(yx - x)[quiet]) < np.max(np.abs(yx - x)[~quiet])


def test_codec_saturates_at_full_scale_and_says_so():
    x = np.linspace(-2, 2, 1000)
    p = params({"degrade.codec.kinds": ["quantize"], "degrade.codec.bits": [16, 16]}).degrade.codec
    y, applied = D.codec(x, SR, np.random.default_rng(0), p)
    assert np.abs(y).max() <= 1.0 and applied["saturated"] == np.mean(np.abs(x) > 1)


def test_codec_records_bits_and_quantizes(tmp_path):
    x = speechlike(7)
    for kind in ["quantize", "mulaw"]:
        p = params({"degrade.codec.kinds": [kind], "degrade.codec.bits": [5, 5]}).degrade.codec
        y, applied = D.codec(x, SR, np.random.default_rng(0), p)
        assert applied == {"type": "codec", "kind": kind, "saturated": 0.0, "bits": 5}
        assert len(np.unique(y)) <= 32 and len(y) == len(x)


@pytest.mark.parametrize("kind", ["mp3", "opus"])
def test_lossy_codecs_stay_aligned(kind):
    x = modulated_noise(8)
    rates = []
    for level in (0.5, 0.95):
        p = params({"degrade.codec.kinds": [kind], "degrade.codec.level": [level, level]}).degrade.codec
        y, applied = D.codec(x, SR, np.random.default_rng(0), p)
        assert applied["kind"] == kind and applied["level"] == level and "bits" not in applied
        assert len(y) == len(x) and best_lag(x, y) == 0
        assert 0 < snr_db(x, y) < 40  # changed, yet still the same signal
        rates.append(applied["kbps"])
    assert rates[1] < rates[0]  # a higher level means a lower bitrate


# ------------------------------------------------------------------ composition


def test_composition_order_min_degradations_and_determinism(babble_pool):
    everything = {f"degrade.{t}.prob": 1.0 for t in D.TYPES}
    order = ["codec", "noise", "clipping", "packet_loss", "bandlimit", "reverb"]
    p = params({**everything, "degrade.order": order}).degrade
    x = speechlike(9)
    y, applied = D.degrade(x, SR, D.clip_rng(1, "utt", 0), p, speaker="spk0", babble_pool=babble_pool)
    assert [a["type"] for a in applied] == order and len(y) == len(x)

    none = {f"degrade.{t}.prob": 0.0 for t in D.TYPES}
    rare = {"degrade.clipping.prob": 0.3, "degrade.noise.prob": 0.01, "degrade.min_degradations": 2}
    p = params({**none, **rare}).degrade
    for copy in range(10):
        _, applied = D.degrade(x, SR, D.clip_rng(1, "utt", copy), p, speaker="spk0", babble_pool=babble_pool)
        assert sorted(a["type"] for a in applied) == ["clipping", "noise"]
        assert [a["type"] for a in applied] == [t for t in p.order if t in {"clipping", "noise"}]

    p = params().degrade
    runs = [D.degrade(x, SR, D.clip_rng(s, "utt7", 0), p, speaker="spk0", babble_pool=babble_pool) for s in (5, 5, 6)]
    assert runs[0][0].tobytes() == runs[1][0].tobytes() and runs[0][1] == runs[1][1]
    assert runs[0][0].tobytes() != runs[2][0].tobytes()
    assert json.dumps(runs[0][1])  # JSON-ready


def test_one_types_params_do_not_shift_another_types_draws():
    x = speechlike(10)
    base = {"degrade.noise.prob": 1.0, "degrade.noise.kinds": ["white"]}
    a = D.degrade(x, SR, D.clip_rng(3, "u", 0), params({**base, "degrade.clipping.prob": 0.0}).degrade)[1]
    b = D.degrade(x, SR, D.clip_rng(3, "u", 0), params({**base, "degrade.clipping.prob": 1.0}).degrade)[1]
    assert a[[s["type"] for s in a].index("noise")] == b[[s["type"] for s in b].index("noise")]


def test_config_rejects_impossible_mixes():
    none = {f"degrade.{t}.prob": 0.0 for t in D.TYPES}
    with pytest.raises(ConfigError, match="min_degradations"):
        params({**none, "degrade.min_degradations": 1})
    with pytest.raises(ConfigError, match="twice"):
        params({"degrade.order": ["noise", "noise"]})
    with pytest.raises(ConfigError, match="user_dir"):
        params({"degrade.noise.kinds": ["user"]})
    assert D.stable_hash("utt_0001") == D.stable_hash("utt_0001") != D.stable_hash("utt_0002")


# ------------------------------------------------------------------ the stage


def make_clean_corpus(root: Path, n: int = 16, speakers: int = 4) -> Path:
    """A tiny clean corpus following the COMMON.md schema."""
    rows = []
    for i in range(n):
        utt = f"utt{i:03d}"
        audio = speechlike(100 + i, 1.0 + 0.1 * (i % 5), 100 + 20 * (i % speakers))
        write_wav(root / "wav" / f"{utt}.wav", audio, SR)
        split = "test" if i % 8 >= 6 else "train"  # two speakers in test, so babble has another talker
        rows.append({"utt_id": utt, "path": f"wav/{utt}.wav", "text": f"sentence {i}", "speaker": f"spk{i % speakers}",
                     "split": split, "duration_s": len(audio) / SR, "sample_rate": SR})
    write_parquet(pa.Table.from_pylist(rows), root / "manifest.parquet")
    write_parquet(pa.Table.from_pylist([], schema=pa.schema([("path", pa.string()), ("reason", pa.string())])),
                  root / "quarantine.parquet")
    return root


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory):
    return make_clean_corpus(tmp_path_factory.mktemp("corpus") / "clean")


def test_stage_is_deterministic_and_worker_independent(clean_dir, tmp_path):
    from gensr.stages.degrade import build_degraded_corpus, misaligned_clips, nonfinite_clips

    small = {"degrade.copies": 2, "degrade.shard_size": 5}
    s1 = build_degraded_corpus(params({**small, "degrade.workers": 1}), clean_dir, tmp_path / "a", progress=False)
    build_degraded_corpus(params({**small, "degrade.workers": 2, "degrade.shard_size": 3}), clean_dir, tmp_path / "b",
                          progress=False)
    other_seed = params({**small, "seed": 99, "degrade.workers": 1})
    build_degraded_corpus(other_seed, clean_dir, tmp_path / "c", progress=False)
    a, b, c = (tree_bytes(tmp_path / d) for d in "abc")
    assert a == b
    assert a["manifest.parquet"] != c["manifest.parquet"]
    assert sum(a[k] != c[k] for k in a if k.startswith("wav/")) >= 30
    assert s1["n_degraded"] == 32 and s1["n_quarantined"] == 0 and not (tmp_path / "a" / ".shards").exists()
    assert misaligned_clips(tmp_path / "a") == [] and nonfinite_clips(tmp_path / "a") == []


def test_manifest_records_exactly_what_was_applied(clean_dir, tmp_path):
    from gensr.stages.degrade import MANIFEST_SCHEMA, build_degraded_corpus

    cfg = params({"degrade.workers": 1, "degrade.copies": 2})
    build_degraded_corpus(cfg, clean_dir, tmp_path, progress=False)
    table = pq.read_table(tmp_path / "manifest.parquet")
    assert table.schema.equals(MANIFEST_SCHEMA)
    clean_rows = {r["utt_id"]: r for r in pq.read_table(clean_dir / "manifest.parquet").to_pylist()}
    for row in table.to_pylist():
        assert row["deg_id"] == f"{row['utt_id']}__d{row['copy']}" and row["path"] == f"wav/{row['deg_id']}.wav"
        clean = clean_rows[row["utt_id"]]
        assert (tmp_path / row["clean_path"]).resolve() == (clean_dir / clean["path"]).resolve()
        assert row["clean_path"].startswith("../")
        assert (row["text"], row["speaker"], row["split"], row["seed"]) == (clean["text"], clean["speaker"],
                                                                           clean["split"], cfg.seed)
        steps = json.loads(row["degradations"])
        clean_audio, _ = read_wav(tmp_path / row["clean_path"])
        degraded, _ = read_wav(tmp_path / row["path"])
        assert len(degraded) == len(clean_audio)
        # replaying the per-clip generator reproduces the recorded steps and the audio exactly
        pool = D.BabblePool({u: r["speaker"] for u, r in clean_rows.items() if r["split"] == row["split"]},
                            lambda u: read_wav(clean_dir / clean_rows[u]["path"])[0])
        replay, replay_steps = D.degrade(clean_audio, SR, D.clip_rng(cfg.seed, row["utt_id"], row["copy"]),
                                         cfg.degrade, speaker=row["speaker"], babble_pool=pool)
        assert replay_steps == steps and replay.tobytes() == degraded.tobytes()
        by_type = {s["type"]: s for s in steps}
        assert row["snr_db"] == by_type.get("noise", {}).get("snr_db")
        assert row["noise_kind"] == by_type.get("noise", {}).get("kind")
        assert row["rt60_s"] == by_type.get("reverb", {}).get("rt60_s")
        assert row["clip_threshold"] == by_type.get("clipping", {}).get("threshold")
        assert row["band_rate_hz"] == by_type.get("bandlimit", {}).get("rate_hz")
        assert row["loss_rate"] == by_type.get("packet_loss", {}).get("loss_rate")
        assert row["codec_kind"] == by_type.get("codec", {}).get("kind")
        assert row["codec_bits"] == by_type.get("codec", {}).get("bits")
        for talker in by_type.get("noise", {}).get("talkers", []):
            other = clean_rows[talker["utt_id"]]
            assert other["speaker"] != row["speaker"] and other["split"] == row["split"]
        if [s["type"] for s in steps] == ["noise"]:  # the audio itself confirms the recorded SNR
            assert abs(snr_db(clean_audio, degraded) - row["snr_db"]) < 0.01


def test_stage_resumes_after_a_crash_and_quarantines_bad_clean_files(clean_dir, tmp_path, monkeypatch):
    import shutil

    from gensr.stages import degrade as stage

    broken = tmp_path / "clean"
    shutil.copytree(clean_dir, broken)
    (broken / "wav" / "utt003.wav").write_text("not audio")
    rows = pq.read_table(broken / "manifest.parquet").to_pylist()
    rows[5]["path"] = "../corpus_outside.wav"  # a manifest path escaping the corpus is rejected, not read
    write_wav(broken.parent / "corpus_outside.wav", speechlike(0), SR)
    write_parquet(pa.Table.from_pylist(rows), broken / "manifest.parquet")
    cfg = params({"degrade.workers": 1, "degrade.shard_size": 4})
    real, calls = stage.degrade_shard, []

    def crash_on_third(*args):
        calls.append(args[3])
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated crash")
        return real(*args)

    monkeypatch.setattr(stage, "degrade_shard", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        stage.build_degraded_corpus(cfg, broken, tmp_path / "out", progress=False)
    assert len(list((tmp_path / "out" / ".shards").glob("*/*[0-9].parquet"))) == 2
    calls.clear()
    summary = stage.build_degraded_corpus(cfg, broken, tmp_path / "out", progress=False)
    assert len(calls) == 2  # 14 clips in 4 shards: the two finished shards were not redone
    monkeypatch.setattr(stage, "degrade_shard", real)
    stage.build_degraded_corpus(cfg, broken, tmp_path / "fresh", progress=False)
    assert tree_bytes(tmp_path / "out") == tree_bytes(tmp_path / "fresh")
    quarantine = pq.read_table(tmp_path / "out" / "quarantine.parquet").to_pylist()
    assert summary["n_degraded"] == 14 and [q["path"] for q in quarantine] == ["../clean/wav/utt003.wav",
                                                                                "../corpus_outside.wav"]
    assert "escapes" in quarantine[1]["reason"]


# ------------------------------------------------------------------ Dagster


def test_degraded_corpus_asset_materializes_with_metadata_and_checks(clean_dir, tmp_path):
    import shutil

    import dagster as dg

    from gensr_dagster.assets.degrade import degraded_aligned_with_clean, degraded_audio_finite, degraded_corpus
    from gensr_dagster.resources import ParamsResource

    shutil.copytree(clean_dir, tmp_path / "data" / "clean")
    resource = ParamsResource(params_path=str(ROOT / "params.yaml"),
                              overrides=[f"paths.data={tmp_path / 'data'}", "degrade.workers=1"])
    result = dg.materialize([degraded_corpus, degraded_aligned_with_clean, degraded_audio_finite],
                            resources={"params": resource}, selection=["degraded_corpus"])
    assert result.success
    meta = result.asset_materializations_for_node("degraded_corpus")[0].metadata
    assert meta["n_degraded"].value == 16 and meta["n_quarantined"].value == 0
    assert meta["total_hours"].value > 0
    assert "| noise |" in meta["degradation_mix"].value
    checks = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"degraded_aligned_with_clean": True, "degraded_audio_finite": True}


@pytest.mark.slow
def test_both_corpus_assets_materialize_from_the_definitions(tmp_path, monkeypatch):
    """The real chain: TTS clean_corpus -> degraded_corpus, with every check of both, in-process."""
    import dagster as dg

    from gensr_dagster.assets import corpus, degrade
    from gensr_dagster.definitions import defs
    from gensr_dagster.resources import ParamsResource

    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("degraded_corpus")).parent_keys == {dg.AssetKey("clean_corpus")}
    monkeypatch.chdir(tmp_path)
    resource = ParamsResource(params_path=str(ROOT / "params.yaml"),
                              # the demo's split leaves 1 valid and 1 test clip of 24, too few to babble from
                              overrides=["corpus.n_utterances=24", "degrade.workers=1",
                                         "corpus.split={train: 0.64, pref: 0.2, valid: 0.08, test: 0.08}"])
    result = dg.materialize(
        [corpus.clean_corpus, corpus.clean_corpus_integrity, degrade.degraded_corpus,
         degrade.degraded_aligned_with_clean, degrade.degraded_audio_finite],
        resources={"params": resource},
    )
    assert result.success
    meta = result.asset_materializations_for_node("degraded_corpus")[0].metadata
    assert meta["n_clean"].value == meta["n_degraded"].value == 24
    evaluations = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
    assert {"degraded_aligned_with_clean", "degraded_audio_finite"} <= set(evaluations)
    assert all(evaluations.values())
    manifest = pq.read_table(tmp_path / "data" / "degraded" / "manifest.parquet").to_pylist()
    assert all((tmp_path / "data" / "degraded" / r["clean_path"]).is_file() for r in manifest)
