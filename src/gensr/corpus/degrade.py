"""Degradation simulator: one pure function per type, composed by `degrade`.

Every type function takes (audio, sr, rng, params) and returns (audio, applied), where
`applied` is a JSON-ready dict {"type": ..., <the exact values used>}. Audio is 1-D float32 at
`sr`; every output has the input's length and no delay, so the degraded clip stays
sample-aligned with its clean reference (fidelity metrics depend on it).

Level policy: nothing rescales or clips the composed result to [-1, 1] afterwards. Noise is
scaled to the exact drawn SNR against its input, reverb keeps a unit direct path and
clipping/band limits/packet loss never add gain, so the clean reference and the degraded clip
share one level and the recorded SNR stays true. Float WAV keeps values beyond ±1; only the
codec step saturates at full scale, as a real codec would.

Randomness: `clip_rng(seed, utt_id, copy)` seeds one generator per degraded clip (never
Python's hash()); `degrade` spawns one child generator per type from it, so changing one
type's params or probability never changes what the other types draw.
"""

from __future__ import annotations

import functools
import hashlib
import tempfile
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import soundfile as sf
from scipy.signal import fftconvolve

from gensr.audio.io import AudioRejected, resample
from gensr.audio.stream import resample_blocks
from gensr.config.corpus import IngestParams
from gensr.corpus.admit import decoded_blocks, inspect_header
from gensr.storage import scan_folder
from gensr.config.degrade import (
    BandlimitParams,
    ClippingParams,
    CodecParams,
    DegradeParams,
    NoiseParams,
    PacketLossParams,
    ReverbParams,
)

# Canonical list: fixes which child generator each type gets, whatever `order` says.
TYPES = ("reverb", "noise", "bandlimit", "clipping", "codec", "packet_loss")
NOISE_EXPONENT = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power spectrum ~ 1/f^exponent
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff", ".au", ".w64", ".caf"}
SF_CODECS = {"mp3": ("MP3", "MPEG_LAYER_III"), "opus": ("OGG", "OPUS")}
SPEED_OF_SOUND = 343.0  # m/s
ISM_CALIBRATION_STEPS = 8


def stable_hash(text: str) -> int:
    """A 64-bit hash of `text` that is the same in every process and Python version."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def clip_rng(seed: int, utt_id: str, copy: int) -> np.random.Generator:
    return np.random.default_rng([seed, stable_hash(utt_id), copy])


def _as_f64(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"expected mono 1-D audio, got shape {audio.shape}")
    return audio.astype(np.float64)


def _fit_length(x: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Crop (or loop, if shorter) `x` to n samples from a random start; returns (audio, start)."""
    start = int(rng.integers(len(x)))
    reps = -(-(start + n) // len(x))
    return np.tile(x, reps)[start : start + n], start


# ---------------------------------------------------------------- sources of noise and RIRs


class BabblePool:
    """Clean clips babble is mixed from: utt_id -> speaker, audio read on demand and cached."""

    def __init__(self, speakers: Mapping[str, str], load: Callable[[str], np.ndarray], cache_clips: int = 256):
        self.speakers = dict(speakers)
        self._load = functools.lru_cache(maxsize=cache_clips)(load)
        self._excluding: dict[str, list[str]] = {}

    @classmethod
    def from_arrays(cls, clips: Mapping[str, tuple[str, np.ndarray]]) -> "BabblePool":
        """From {utt_id: (speaker, audio)} already in memory."""
        return cls({u: s for u, (s, _) in clips.items()}, lambda u: clips[u][1])

    def ids_excluding(self, speaker: str | None) -> list[str]:
        if speaker not in self._excluding:
            self._excluding[speaker] = sorted(u for u, s in self.speakers.items() if s != speaker)
        return self._excluding[speaker]

    def load(self, utt_id: str) -> np.ndarray:
        return self._load(utt_id)


class AudioFolder:
    """Every usable audio file under `root` (sorted); every other entry is kept in `rejected` with a reason.

    A file is read as ingest reads one (gensr.corpus.admit): its header checked against the `ingest` limits before
    a sample is decoded, then decoded in blocks that stop past ingest.max_seconds, so a lying, truncated or huge
    noise/RIR file is a reject with its reason and never decoded whole."""

    def __init__(self, root: Path, sample_rate: int, param: str, ingest: IngestParams):
        self.root, self.sample_rate, self.param, self.ingest = Path(root), sample_rate, param, ingest
        if not self.root.is_dir():
            raise ValueError(f"{param}: folder {self.root} does not exist; set {param} to a folder of audio files")
        self.files: list[str] = []
        self.rejected: list[tuple[str, str]] = []  # (path, reason)
        for entry in sorted(scan_folder(self.root), key=lambda e: e.path):  # Path order, as ever: it fixes `pick`
            path = entry.path
            try:
                if entry.problem is not None:
                    raise AudioRejected(path, entry.problem)
                if path.suffix.lower() not in AUDIO_SUFFIXES:
                    raise AudioRejected(path, f"not_audio: suffix not one of {' '.join(sorted(AUDIO_SUFFIXES))}")
                audio = self._read(path)
                if not np.any(audio):
                    raise AudioRejected(path, "silent: all samples are zero")
                self.files.append(path.relative_to(self.root).as_posix())
            except AudioRejected as err:
                self.rejected.append((str(path), err.reason))
            except Exception as err:  # one bad file is a reject, not a crash of the stage
                self.rejected.append((str(path), f"error: {type(err).__name__}: {err}".replace("\n", " ")[:300]))
        if not self.files:
            raise ValueError(
                f"{param}: no usable audio under {self.root} ({len(self.rejected)} rejected: {self.rejected[:3]}); "
                f"point {param} at a folder of wav/flac files"
            )
        self.load = functools.lru_cache(maxsize=64)(lambda rel: self._read(self.root / rel))

    def _read(self, path: Path) -> np.ndarray:
        """The file as mono float32 at sample_rate (load_audio's samples), or AudioRejected with the reason."""
        header = inspect_header(path, self.ingest, self.sample_rate)
        max_len = int(self.ingest.max_seconds * self.sample_rate)
        blocks, n = [], 0
        for block in resample_blocks(decoded_blocks(path, header, self.ingest), header.samplerate, self.sample_rate):
            n += block.size
            if n > max_len:
                raise AudioRejected(path, f"too_long: more than ingest.max_seconds={self.ingest.max_seconds} s (cut it "
                                          "into parts, e.g. with `gensr ingest`, or raise the limit)")
            blocks.append(block)
        return np.concatenate([np.zeros(0, np.float32), *blocks])

    def pick(self, rng: np.random.Generator) -> tuple[str, np.ndarray]:
        rel = self.files[int(rng.integers(len(self.files)))]
        return rel, self.load(rel)


def _limits(ingest: IngestParams | None) -> IngestParams:
    if ingest is None:
        raise ValueError("a user noise/RIR folder is read under the ingest limits: pass ingest=params.ingest")
    return ingest


@functools.lru_cache(maxsize=8)
def audio_folder(root: str, sample_rate: int, param: str, ingest: IngestParams) -> AudioFolder:
    """One scanned folder per process (scanning reads every file once)."""
    return AudioFolder(Path(root), sample_rate, param, ingest)


# ---------------------------------------------------------------- additive noise


def colored_noise(n: int, sr: int, rng: np.random.Generator, exponent: float, min_hz: float) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1/f^exponent above min_hz, flat below, no DC."""
    white = rng.standard_normal(n)
    if exponent == 0:
        return white
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    gain = np.maximum(freqs, min_hz) ** (-exponent / 2)
    gain[0] = 0.0
    return np.fft.irfft(np.fft.rfft(white) * gain, n)


def babble_noise(n: int, rng: np.random.Generator, pool: BabblePool, speaker: str | None, talkers: int):
    """Sum of `talkers` distinct clean clips of other speakers, each at unit RMS."""
    ids = pool.ids_excluding(speaker)
    if not ids:
        raise ValueError(
            f"babble noise needs clips of speakers other than {speaker!r} in the same split, and there are none; "
            "remove 'babble' from degrade.noise.kinds or use a corpus with more speakers"
        )
    chosen = rng.choice(len(ids), size=min(talkers, len(ids)), replace=False)
    total, used = np.zeros(n), []
    for i in chosen:
        clip, start = _fit_length(_as_f64(pool.load(ids[i])), n, rng)
        rms = np.sqrt(np.mean(clip**2))
        if rms > 0:
            total += clip / rms
        used.append({"utt_id": ids[i], "start": start})
    return total, used


def scale_to_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`noise` scaled so that 10 log10(sum signal² / sum noise²) == snr_db exactly."""
    p_signal, p_noise = float(np.sum(signal**2)), float(np.sum(noise**2))
    if p_signal == 0 or p_noise == 0:
        raise ValueError("cannot set an SNR: the signal or the noise is all zeros")
    return noise * np.sqrt(p_signal / (p_noise * 10 ** (snr_db / 10)))


def add_noise(audio, sr: int, rng: np.random.Generator, params: NoiseParams, *, speaker=None, babble_pool=None,
              ingest: IngestParams | None = None):
    """`ingest`: the limits a user noise file is read under (needed for the kind 'user' only)."""
    x = _as_f64(audio)
    kind = params.kinds[int(rng.integers(len(params.kinds)))]
    snr_db = float(rng.uniform(*params.snr_db))
    applied = {"type": "noise", "kind": kind, "snr_db": snr_db}
    if kind in NOISE_EXPONENT:
        noise = colored_noise(len(x), sr, rng, NOISE_EXPONENT[kind], params.colored_min_hz)
    elif kind == "babble":
        if babble_pool is None:
            raise ValueError("babble noise needs a babble_pool of other speakers' clips")
        noise, applied["talkers"] = babble_noise(len(x), rng, babble_pool, speaker, params.babble_talkers)
    else:
        folder = audio_folder(str(Path(params.user_dir).resolve()), sr, "degrade.noise.user_dir", _limits(ingest))
        rel, recording = folder.pick(rng)
        noise, start = _fit_length(_as_f64(recording), len(x), rng)
        applied.update(file=rel, start=start)
    return (x + scale_to_snr(x, noise, snr_db)).astype(np.float32), applied


# ---------------------------------------------------------------- reverberation


def simulated_rir(sr: int, rng: np.random.Generator, rt60_s: float, drr_db: float) -> np.ndarray:
    """Unit direct path at sample 0, then Gaussian noise decaying 60 dB over rt60_s at the given DRR."""
    t = np.arange(1, int(np.ceil(rt60_s * sr)) + 1) / sr
    tail = rng.standard_normal(len(t)) * np.exp(-3 * np.log(10) * t / rt60_s)
    tail *= np.sqrt(10 ** (-drr_db / 10) / np.sum(tail**2))
    return np.concatenate([[1.0], tail])


def image_source_rir(sr: int, rt60_design_s: float, room, source, mic) -> tuple[np.ndarray, int]:
    """Shoebox RIR by the image method (Allen & Berkley), frequency-independent walls whose
    absorption gives `rt60_design_s` by Eyring's formula; returns (rir with unit direct path, direct index).

    Images are kept up to 1.5x the design RT60's travel distance, delays rounded to the sample.
    """
    room, source, mic = (np.asarray(v, dtype=np.float64) for v in (room, source, mic))
    volume = np.prod(room)
    surface = 2 * (room[0] * room[1] + room[0] * room[2] + room[1] * room[2])
    beta = np.sqrt(np.exp(-0.161 * volume / (surface * rt60_design_s)))  # pressure reflection coefficient
    reach = 1.5 * SPEED_OF_SOUND * rt60_design_s  # ~0.95 x the calibrated RT60: -57 dB, past the T20 fit
    coords, reflections = [], []
    for axis in range(3):
        n = np.arange(-(int(reach / (2 * room[axis])) + 1), int(reach / (2 * room[axis])) + 2)
        coords.append(np.concatenate([source[axis] + 2 * n * room[axis], -source[axis] + 2 * n * room[axis]]) - mic[axis])
        reflections.append(np.concatenate([2 * np.abs(n), np.abs(2 * n - 1)]))
    dist = np.sqrt(coords[0][:, None, None] ** 2 + coords[1][None, :, None] ** 2 + coords[2][None, None, :] ** 2)
    order = reflections[0][:, None, None] + reflections[1][None, :, None] + reflections[2][None, None, :]
    keep = dist <= reach
    dist, order = dist[keep], order[keep]
    delay = np.round(dist / SPEED_OF_SOUND * sr).astype(np.int64)
    rir = np.bincount(delay, weights=beta**order / dist)
    direct = int(np.round(np.linalg.norm(source - mic) / SPEED_OF_SOUND * sr))
    return rir / rir[direct], direct


def calibrated_image_source_rir(sr: int, rt60_s: float, room, source, mic) -> tuple[np.ndarray, int, float]:
    """The image method decays slower than Eyring predicts (axial and tangential paths meet few
    walls), so the design RT60 is solved for, by secant steps on log RT60, until the Schroeder RT60
    is within 2 % of rt60_s. Returns the closest (rir, direct index, measured RT60)."""
    tried: list[tuple[float, float, np.ndarray, int]] = []  # (log design, log error, rir, direct)
    log_design = np.log(rt60_s)
    for _ in range(ISM_CALIBRATION_STEPS):
        rir, direct = image_source_rir(sr, float(np.exp(log_design)), room, source, mic)
        measured = estimate_rt60(rir, sr)
        if measured is None:
            break
        tried.append((log_design, np.log(measured / rt60_s), rir, direct))
        if abs(measured - rt60_s) <= 0.02 * rt60_s:
            break
        x1, f1 = tried[-1][:2]
        if len(tried) == 1 or tried[-2][1] == f1:
            log_design = x1 - f1  # first step: assume the measured RT60 scales with the design
        else:
            x0, f0 = tried[-2][:2]
            log_design = x1 - f1 * (x1 - x0) / (f1 - f0)
    if not tried:
        return rir, direct, None
    _, error, rir, direct = min(tried, key=lambda t: abs(t[1]))
    return rir, direct, float(rt60_s * np.exp(error))


def estimate_rt60(rir: np.ndarray, sr: int) -> float | None:
    """RT60 by Schroeder backward integration (T20 fit from -5 to -25 dB, times 3); None if too short."""
    energy = _as_f64(rir)[int(np.argmax(np.abs(rir))) :] ** 2
    edc = np.cumsum(energy[::-1])[::-1]
    edc_db = 10 * np.log10(np.maximum(edc / edc[0], 1e-300))
    fit = np.nonzero((edc_db <= -5) & (edc_db >= -25))[0]
    if len(fit) < 2 or edc_db[-1] > -25:
        return None
    slope = np.polyfit(fit / sr, edc_db[fit], 1)[0]
    return float(-60.0 / slope) if slope < 0 else None


def convolve_aligned(audio: np.ndarray, rir: np.ndarray, direct: int) -> np.ndarray:
    """Convolve and cut so that the RIR's direct path lands on lag 0 (output length = input length)."""
    return fftconvolve(audio, rir)[direct : direct + len(audio)]


def place_source_and_mic(rng: np.random.Generator, room: np.ndarray, margin: float, distance_m, tries: int = 1000):
    """Source uniform in the room (off the walls), mic at a drawn distance in a uniform direction."""
    for _ in range(tries):
        source = rng.uniform(margin, room - margin)
        direction = rng.standard_normal(3)
        mic = source + rng.uniform(*distance_m) * direction / np.linalg.norm(direction)
        if np.all(mic >= margin) and np.all(mic <= room - margin):
            return source, mic
    raise ValueError(
        f"degrade.reverb.distance_m: no source/mic pair {list(distance_m)} m apart fits room {room.round(2).tolist()} "
        "with wall_margin_m; lower distance_m or raise room_length_m / room_height_m"
    )


def reverberate(audio, sr: int, rng: np.random.Generator, params: ReverbParams, ingest: IngestParams | None = None):
    """`ingest`: the limits a user RIR file is read under (needed with user_rir_dir only)."""
    x = _as_f64(audio)
    if params.user_rir_dir is not None:
        folder = audio_folder(str(Path(params.user_rir_dir).resolve()), sr, "degrade.reverb.user_rir_dir",
                              _limits(ingest))
        rel, rir = folder.pick(rng)
        rir = _as_f64(rir)
        direct = int(np.argmax(np.abs(rir)))
        rir = rir / rir[direct]  # unit direct path: the dry clean is the reference at the same level
        applied = {"type": "reverb", "source": "user", "file": rel, "rt60_s": estimate_rt60(rir, sr)}
        return convolve_aligned(x, rir, direct).astype(np.float32), applied
    method = params.methods[int(rng.integers(len(params.methods)))]
    rt60_s = float(rng.uniform(*params.rt60_s))
    applied = {"type": "reverb", "source": "simulated", "method": method}
    if method == "tail":
        drr_db = float(rng.uniform(*params.drr_db))
        rir, direct = simulated_rir(sr, rng, rt60_s, drr_db), 0
        applied.update(rt60_s=rt60_s, drr_db=drr_db)
    else:
        lo, hi = params.room_length_m
        room = np.array([rng.uniform(lo, hi), rng.uniform(lo, hi), rng.uniform(*params.room_height_m)])
        source, mic = place_source_and_mic(rng, room, params.wall_margin_m, params.distance_m)
        rir, direct, measured = calibrated_image_source_rir(sr, rt60_s, room, source, mic)
        applied.update(
            rt60_s=measured,
            rt60_target_s=rt60_s,
            drr_db=float(10 * np.log10(1.0 / np.sum(rir[direct + 1 :] ** 2))),
            room_m=[float(v) for v in room],
            source_m=[float(v) for v in source],
            mic_m=[float(v) for v in mic],
            distance_m=float(np.linalg.norm(source - mic)),
        )
    return convolve_aligned(x, rir, direct).astype(np.float32), applied


# ---------------------------------------------------------------- clipping, band limit, packet loss


def clip(audio, sr: int, rng: np.random.Generator, params: ClippingParams):
    x = _as_f64(audio)
    threshold = float(rng.uniform(*params.threshold))
    level = threshold * float(np.max(np.abs(x)))
    return np.clip(x, -level, level).astype(np.float32), {"type": "clipping", "threshold": threshold, "level": level}


def bandlimit(audio, sr: int, rng: np.random.Generator, params: BandlimitParams):
    x = np.asarray(audio, dtype=np.float32)
    rate = int(params.rates_hz[int(rng.integers(len(params.rates_hz)))])
    if rate >= sr:
        raise ValueError(f"degrade.bandlimit.rates_hz: {rate} Hz is not below the audio rate {sr} Hz; use lower rates")
    y = resample(resample(x, sr, rate), rate, sr)  # polyphase, zero-phase: stays aligned
    y = np.pad(y, (0, max(0, len(x) - len(y))))[: len(x)]
    return y.astype(np.float32), {"type": "bandlimit", "rate_hz": rate}


def packet_loss(audio, sr: int, rng: np.random.Generator, params: PacketLossParams):
    """Zero whole frames; at least one frame is dropped when the type fires."""
    y = np.array(audio, dtype=np.float32)
    frame = max(1, round(sr * params.frame_ms / 1000))
    n_frames = -(-len(y) // frame)
    target = float(rng.uniform(*params.loss_rate))
    k = min(n_frames, max(1, round(target * n_frames)))
    dropped = sorted(int(i) for i in rng.choice(n_frames, size=k, replace=False))
    for i in dropped:
        y[i * frame : (i + 1) * frame] = 0.0
    applied = {
        "type": "packet_loss",
        "frame_ms": float(params.frame_ms),
        "frame_samples": frame,
        "target_loss_rate": target,
        "loss_rate": k / n_frames,
        "dropped_frames": dropped,
    }
    return y, applied


# ---------------------------------------------------------------- codecs


def pcm_quantize(x: np.ndarray, bits: int) -> np.ndarray:
    """Two's-complement PCM at `bits`: 2**bits levels k / 2**(bits-1), saturating at full scale."""
    half = 2 ** (bits - 1)
    return np.clip(np.round(x * half), -half, half - 1) / half


def mulaw_compress(x: np.ndarray, bits: int) -> np.ndarray:
    mu = 2**bits - 1
    return np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)


def mulaw_expand(c: np.ndarray, bits: int) -> np.ndarray:
    mu = 2**bits - 1
    return np.sign(c) * np.expm1(np.abs(c) * np.log1p(mu)) / mu


def sf_codec_roundtrip(x: np.ndarray, sr: int, kind: str, level: float) -> tuple[np.ndarray, float]:
    """Encode and decode with libsndfile's MP3/Opus; returns (audio, bitrate in kbit/s).

    libsndfile removes the encoder delay on decode, so the output stays sample-aligned. It goes
    through a temp file, not BytesIO: with BytesIO a Ctrl-C inside soundfile's write callback is
    swallowed by cffi and leaves a silently corrupt stream.
    """
    fmt, subtype = SF_CODECS[kind]
    with tempfile.TemporaryDirectory(prefix="gensr_codec_") as tmp:
        path = Path(tmp) / f"clip.{'mp3' if kind == 'mp3' else 'ogg'}"
        try:
            with sf.SoundFile(path, "w", sr, 1, format=fmt, subtype=subtype, compression_level=level) as f:
                f.write(x.astype(np.float32))
            y, _ = sf.read(path, dtype="float32")
        except (sf.LibsndfileError, RuntimeError) as err:
            raise ValueError(
                f"degrade.codec: {kind} at {sr} Hz, level {level:.3f} failed in libsndfile ({err}); "
                "remove it from degrade.codec.kinds or change degrade.codec.level"
            ) from None
        n_bytes = path.stat().st_size
    y = np.pad(y, (0, max(0, len(x) - len(y))))[: len(x)]
    return y, n_bytes * 8 / (len(x) / sr) / 1000


def codec(audio, sr: int, rng: np.random.Generator, params: CodecParams):
    x = _as_f64(audio)
    saturated = float(np.mean(np.abs(x) > 1.0))
    x = np.clip(x, -1.0, 1.0)  # a codec's full scale; the clipped fraction is recorded
    kind = params.kinds[int(rng.integers(len(params.kinds)))]
    applied: dict = {"type": "codec", "kind": kind, "saturated": saturated}
    if kind in SF_CODECS:
        level = float(rng.uniform(*params.level))
        y, kbps = sf_codec_roundtrip(x, sr, kind, level)
        applied.update(level=level, kbps=kbps)
    else:
        bits = int(rng.integers(params.bits[0], params.bits[1] + 1))
        if kind == "mulaw":
            y = mulaw_expand(pcm_quantize(mulaw_compress(x, bits), bits), bits)
        else:
            y = pcm_quantize(x, bits)
        applied["bits"] = bits
    return np.asarray(y, dtype=np.float32), applied


# ---------------------------------------------------------------- composition

APPLY = {"reverb": reverberate, "bandlimit": bandlimit, "clipping": clip, "codec": codec, "packet_loss": packet_loss}


def choose_types(rng: np.random.Generator, params: DegradeParams) -> list[str]:
    """Each type in `order` fires with its prob; if fewer than min_degradations fired, more are
    drawn (without replacement, weighted by prob) from the rest. Returned in `order`."""
    prob = {t: getattr(params, t).prob for t in TYPES}
    draws = rng.random(len(TYPES))
    fired = {t for t, u in zip(TYPES, draws) if t in params.order and u < prob[t]}
    missing = params.min_degradations - len(fired)
    if missing > 0:
        rest = [t for t in params.order if t not in fired and prob[t] > 0]
        weights = np.array([prob[t] for t in rest])
        picks = rng.choice(len(rest), size=missing, replace=False, p=weights / weights.sum())
        fired |= {rest[i] for i in picks}
    return [t for t in params.order if t in fired]


def degrade(
    audio: np.ndarray,
    sr: int,
    rng: np.random.Generator,
    params: DegradeParams,
    *,
    speaker: str | None = None,
    babble_pool: BabblePool | None = None,
    ingest: IngestParams | None = None,
) -> tuple[np.ndarray, list[dict]]:
    """Apply the chosen degradation types in `params.order`; returns (audio, applied list in order).
    `ingest`: the limits user noise/RIR files are read under (params.ingest)."""
    select_rng, *type_rngs = rng.spawn(1 + len(TYPES))
    rngs = dict(zip(TYPES, type_rngs))
    y = np.asarray(audio, dtype=np.float32)
    applied = []
    for kind in choose_types(select_rng, params):
        if kind == "noise":
            y, step = add_noise(y, sr, rngs[kind], params.noise, speaker=speaker, babble_pool=babble_pool, ingest=ingest)
        elif kind == "reverb":
            y, step = reverberate(y, sr, rngs[kind], params.reverb, ingest)
        else:
            y, step = APPLY[kind](y, sr, rngs[kind], getattr(params, kind))
        applied.append(step)
    return y, applied
