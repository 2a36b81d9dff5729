"""DNSMOS P.835 (SIG, BAK, OVRL) and P.808 from the ONNX models in the speechmos wheel.

Same numbers as `speechmos.dnsmos.run` (tested to 1e-3), computed with less work. The wrapper
repeats a clip until it is 9.01 s long, cuts 9.01 s windows at 1 s hops, runs both models
window by window, maps the primary model's raw outputs through the official calibration
polynomials and averages over windows. A 3 s clip becomes 3 windows that overlap by 8 s, and
97% of the primary model's time goes into four full-resolution 3x3 conv layers over the
spectrogram. Windows start on whole spectrogram frames (1 s = 100 hops), so those layers are
evaluated once over the repeated clip (`SharedFramePrimary`), only the 4 frames at each
window edge (where the per-window zero padding differs) are recomputed, and the cheap rest
of the graph runs per window. The P.808 mel frames are shared the same way. Both parts run in
onnxruntime sessions cut out of the original model files, with the original weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from gensr.config.metrics import DnsmosParams
from gensr.metrics.registry import get
from gensr.metrics.base import Clip, MetricFailure, Score, Scorer, library_version
from gensr.metrics.onnx_weights import read_onnx, submodel

SAMPLE_RATE = 16000
INPUT_LENGTH = 9.01  # seconds per window, as in speechmos/dnsmos.py and Microsoft's dnsmos_local.py
WINDOW = int(INPUT_LENGTH * SAMPLE_RATE)
HOP = 160  # spectrogram hop of both models; a 1 s window hop is 100 frames
FRAMES = 900  # frames per window in both models
WINDOW_HOP_FRAMES = SAMPLE_RATE // HOP
METRICS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808")


def model_paths(personalized: bool) -> tuple[Path, Path]:
    """(primary P.835 model, P.808 model) inside the installed speechmos package."""
    import speechmos

    root = Path(speechmos.__file__).parent
    primary = root / ("pdnsmos_models" if personalized else "dnsmos_models") / "sig_bak_ovr.onnx"
    p808 = root / "dnsmos_models" / "model_v8.onnx"
    for path in (primary, p808):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: DNSMOS model missing from the speechmos wheel; reinstall speechmos==0.0.1.1")
    return primary, p808


def _session(model: str | bytes, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def repeated(audio: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """The wrapper's repeat-padded clip and the 1 s hops of the windows it keeps.

    Same arithmetic as speechmos: `int((idx + 9.01) * fs)` rounds down to one sample short
    for some idx (7..23, 119..122), and the wrapper silently skips those windows; so do we.
    """
    if len(audio) == 0:
        raise MetricFailure("dnsmos: empty audio")
    while len(audio) < WINDOW:
        audio = np.append(audio, audio)
    num_hops = int(np.floor(len(audio) / SAMPLE_RATE) - INPUT_LENGTH) + 1
    kept = [
        idx
        for idx in range(num_hops)
        if len(audio[int(idx * SAMPLE_RATE) : int((idx + INPUT_LENGTH) * SAMPLE_RATE)]) >= WINDOW
    ]
    return audio, kept


def windows(audio: np.ndarray) -> list[np.ndarray]:
    """The wrapper's windows of one clip, one array each."""
    audio, kept = repeated(audio)
    return [audio[idx * SAMPLE_RATE : idx * SAMPLE_RATE + WINDOW] for idx in kept]


class SharedFramePrimary:
    """The primary P.835 model, with its full-resolution conv layers run once per clip.

    The graph is: framing + DFT (as 1x1 convs) -> log10 power -> N x (3x3 conv, pad 1, ReLU) at
    full resolution -> maxpool -> small head. Window k's frames are frames 100k..100k+899 of
    the repeated clip, so the conv stack over the whole clip equals the per-window stack
    except within N frames of a window edge, which is recomputed from a short slice.
    """

    def __init__(self, path: Path, threads: int, max_frames: int = 2400):
        graph = read_onnx(path)
        ops = [node.op_type for node in graph.nodes]
        first_conv = next(i for i, n in enumerate(graph.nodes) if n.op_type == "Conv" and graph.initializers[n.inputs[1]].ndim == 4)
        first_pool = ops.index("MaxPool")
        stack = graph.nodes[first_conv:first_pool]
        convs = [n for n in stack if n.op_type == "Conv"]
        if any(n.op_type not in ("Conv", "Relu") for n in stack) or any(
            list(n.attributes.get("pads", [])) != [1, 1, 1, 1] or list(n.attributes.get("kernel_shape", [])) != [3, 3]
            for n in convs
        ):
            raise ValueError(f"{path}: unexpected DNSMOS graph layout; the shared-frame evaluation does not apply")
        self.halo = len(convs)  # each 3x3 conv widens the edge effect by one frame
        self.edge = 2 * self.halo  # the smallest slice whose first/last `halo` output frames are exact
        self.max_frames = max_frames
        init = graph.initializers
        self.dft_real = np.ascontiguousarray(init["time2freq/stft-real/kernel:0"][:, :, 0].T)
        self.dft_imag = np.ascontiguousarray(init["time2freq/stft-imag/kernel:0"][:, :, 0].T)
        self.power = init["mos_estimator_logpow/pow/y:0"]
        self.floor = init["mos_estimator_logpow/Maximum/x:0"]
        self.log_base = init["mos_estimator_logpow/truediv/y:0"]
        stack_in, stack_out = stack[0].inputs[0], stack[-1].outputs[0]
        channels = init[convs[-1].inputs[1]].shape[0]
        bins = self.dft_real.shape[1]
        self.stack = _session(submodel(graph, stack, {stack_in: ["N", 1, "T", bins]}, {stack_out: ["N", channels, "T", bins]}), threads)
        head = graph.nodes[first_pool:]
        self.head = _session(
            submodel(graph, head, {stack_out: ["N", channels, FRAMES, bins]}, {head[-1].outputs[0]: ["N", 3]}), threads
        )
        self.stack_in, self.stack_out, self.channels = stack_in, stack_out, channels

    def log_power(self, audio: np.ndarray, n_frames: int) -> np.ndarray:
        """(n_frames, 161) log10 power spectrogram, frames of 320 samples at hop 160 (as the graph)."""
        frames = np.lib.stride_tricks.sliding_window_view(audio[: (n_frames + 1) * HOP], 2 * HOP)[::HOP][:n_frames]
        real = frames @ self.dft_real
        imag = frames @ self.dft_imag
        magnitude = np.sqrt(real * real + imag * imag)
        return (np.log(np.maximum(self.floor, magnitude**self.power)) / self.log_base).astype(np.float32)

    def _stack(self, spec: np.ndarray) -> np.ndarray:
        """Conv stack over (T, F) -> (C, T, F); long inputs run in chunks with a halo."""
        total = len(spec)
        if total <= self.max_frames:
            return self.stack.run(None, {self.stack_in: spec[None, None]})[0][0]
        parts = []
        for start in range(0, total, self.max_frames):
            stop = min(total, start + self.max_frames)
            lo, hi = max(0, start - self.halo), min(total, stop + self.halo)
            out = self.stack.run(None, {self.stack_in: spec[None, None, lo:hi]})[0][0]
            parts.append(out[:, start - lo : start - lo + (stop - start)])
        return np.concatenate(parts, axis=1)

    def __call__(self, audio: np.ndarray, hops: list[int]) -> np.ndarray:
        """Raw (len(hops), 3) outputs for the repeated clip `audio` and its kept window hops."""
        starts = [idx * WINDOW_HOP_FRAMES for idx in hops]
        spec = self.log_power(audio, starts[-1] + FRAMES)
        shared = np.empty((self.channels, len(spec), spec.shape[1]), np.float32)
        for lo, hi in _merged([(a, a + FRAMES) for a in starts]):
            shared[:, lo:hi] = self._stack(spec[lo:hi])
        edges = []
        for a in starts:
            edges += [spec[a : a + self.edge], spec[a + FRAMES - self.edge : a + FRAMES]]
        edge_out = self.stack.run(None, {self.stack_in: np.stack(edges)[:, None]})[0]
        features = np.stack([shared[:, a : a + FRAMES] for a in starts])
        features[:, :, : self.halo] = edge_out[0::2, :, : self.halo]
        features[:, :, -self.halo :] = edge_out[1::2, :, -self.halo :]
        return self.head.run(None, {self.stack_out: features})[0]


def _merged(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(lo, hi) for lo, hi in out]


class SharedMelP808Features:
    """The P.808 model's inputs for every kept window, from mel frames shared across windows.

    speechmos computes `librosa.feature.melspectrogram(seg[:-160], n_fft=321, hop=160,
    n_mels=120)` per window (centered frames, zero padded), then dB relative to the window's
    own max. Frames 1..898 of a window lie inside the clip and equal the clip's frames at
    100*hop + j; only frames 0 and 899 see the window's zero padding and are computed apart.
    """

    n_fft = 321

    def __init__(self):
        import librosa

        self.window = librosa.filters.get_window("hann", self.n_fft, fftbins=True)
        self.basis = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=self.n_fft, n_mels=120)

    def _mel(self, frames: np.ndarray) -> np.ndarray:
        spectrum = np.fft.rfft(frames * self.window, axis=-1).astype(np.complex64)
        return (np.abs(spectrum) ** 2) @ self.basis.T

    def __call__(self, audio: np.ndarray, hops: list[int]) -> np.ndarray:
        import librosa

        half = self.n_fft // 2
        last = hops[-1] * WINDOW_HOP_FRAMES + FRAMES - 2  # highest interior frame index needed
        long_frames = np.lib.stride_tricks.sliding_window_view(audio[: last * HOP + half + 1], self.n_fft)[::HOP]
        interior = self._mel(long_frames)  # row m-1 is the frame centred on sample 160*m
        segment = WINDOW - HOP  # the wrapper drops the last 160 samples of each window
        out = np.empty((len(hops), FRAMES, self.basis.shape[0]), np.float32)
        for k, idx in enumerate(hops):
            start = idx * SAMPLE_RATE
            left = np.concatenate([np.zeros(half, audio.dtype), audio[start : start + half + 1]])
            right = np.concatenate([audio[start + segment - 2 * half : start + segment], np.zeros(1, audio.dtype)])
            edges = self._mel(np.stack([left, right]))
            m0 = idx * WINDOW_HOP_FRAMES
            mel = np.concatenate([edges[:1], interior[m0 : m0 + FRAMES - 2], edges[1:]])
            out[k] = ((librosa.power_to_db(mel.T, ref=np.max) + 40) / 40).T
        return out


def calibrate(raw: np.ndarray, personalized: bool) -> np.ndarray:
    """Official polynomial calibration (speechmos DNSMOS.get_polyfit_val) of raw (sig, bak, ovr)."""
    from speechmos.dnsmos import DNSMOS

    sig, bak, ovr = DNSMOS.get_polyfit_val(None, raw[:, 0], raw[:, 1], raw[:, 2], personalized)
    return np.stack([sig, bak, ovr], axis=1)


class Dnsmos(Scorer):
    def __init__(self, params: DnsmosParams, threads: int = 1):
        self.params = params
        self.threads = threads
        backend = "speechmos-onnx-personalized" if params.personalized else "speechmos-onnx"
        version = library_version("speechmos", "onnxruntime")
        self.infos = tuple(
            get(name).info(backend, version) for name in METRICS
        )

    def setup(self) -> None:
        primary, p808 = model_paths(self.params.personalized)
        self._primary = SharedFramePrimary(primary, self.threads)
        self._p808 = _session(str(p808), self.threads)
        self._p808_features = SharedMelP808Features()

    def score_batch(self, clips: Sequence[Clip]) -> list[dict[str, Score]]:
        if not hasattr(self, "_primary"):
            self.setup()
        results: list[dict[str, Score] | None] = [None] * len(clips)
        raw, features, owner = [], [], []
        for i, clip in enumerate(clips):
            try:
                audio, hops = repeated(clip.audio_at(SAMPLE_RATE))
                raw.append(self._primary(audio, hops))
                features.append(self._p808_features(audio, hops))
            except MetricFailure as err:
                results[i] = self.all_nan(str(err))
                continue
            owner += [i] * len(hops)
        if owner:
            features = np.concatenate(features)
            step = self.params.windows_per_run
            p808 = np.concatenate(
                [self._p808.run(None, {"input_1": features[i : i + step]})[0] for i in range(0, len(features), step)]
            )[:, 0]
            calibrated = calibrate(np.concatenate(raw), self.params.personalized)
            owner = np.asarray(owner)
            for i in np.unique(owner):
                rows = owner == i
                sig, bak, ovr = (float(np.mean(calibrated[rows, j])) for j in range(3))
                results[i] = self.checked(
                    {"dnsmos_sig": sig, "dnsmos_bak": bak, "dnsmos_ovrl": ovr, "dnsmos_p808": float(np.mean(p808[rows]))}
                )
        return results
