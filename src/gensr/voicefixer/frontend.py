"""The mel front end Voicefixer shares between its analysis module and its vocoder.

As in Voicefixer 0.1.3: a centred, reflect-padded STFT with a periodic Hann window (torchlibrosa's conv
STFT there, torch.stft here: the same numbers up to float32 rounding), the magnitude
sqrt(max(re^2 + im^2, 1e-8)), and an HTK mel filterbank without area normalisation (torchaudio's
`melscale_fbanks`, copied into voicefixer/tools/mel_scale.py). Log-mels are log10(max(mel, 1e-8)).
Shapes follow the official code: spectrograms are [batch, 1, frames, bins].
"""

from __future__ import annotations

import math

import torch
from torch import nn

LOG_FLOOR = 1e-8  # to_log in voicefixer/tools/pytorch_util.py
LOG_CEIL = 5.0  # from_log clips log10 values at 5
LOUDER_TOLERANCE = 0.01  # input_phase: a restored/input ratio within 1% of 1 (0.04 dB) counts as 1


def to_log(mel: torch.Tensor) -> torch.Tensor:
    return torch.log10(torch.clamp(mel, min=LOG_FLOOR))


def from_log(log_mel: torch.Tensor) -> torch.Tensor:
    return 10 ** torch.clamp(log_mel, max=LOG_CEIL)


def _hz_to_mel(freq: float) -> float:
    return 2595.0 * math.log10(1.0 + freq / 700.0)


def _mel_to_hz(mels: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 0.0,
                   f_max: float | None = None) -> torch.Tensor:
    """[n_freqs, n_mels] triangular HTK filters, no normalisation (torchaudio.functional.melscale_fbanks)."""
    f_max = float(sample_rate // 2) if f_max is None else f_max
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    m_pts = torch.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2)
    f_pts = _mel_to_hz(m_pts)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.max(torch.zeros(1), torch.min(down, up))


class MelFrontEnd(nn.Module):
    """wave [B, L] -> linear mel [B, 1, 1 + L // hop, n_mels]. Buffers are not saved in checkpoints."""

    def __init__(self, sample_rate: int, n_fft: int, hop: int, n_mels: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True), persistent=False)
        self.register_buffer("fb", mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate), persistent=False)
        # input_phase: the filterbank's pseudo-inverse, and for each bin the nearest bin a filter covers (DC has none)
        self.register_buffer("fb_pinv", torch.linalg.pinv(self.fb), persistent=False)
        covered = torch.nonzero(self.fb.sum(1) > LOG_FLOOR)[:, 0]
        nearest = covered[torch.argmin((torch.arange(n_fft // 2 + 1)[:, None] - covered[None, :]).abs(), dim=1)]
        self.register_buffer("covered_bin", nearest, persistent=False)

    def magnitude(self, wave: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(wave.float(), self.n_fft, self.hop, self.n_fft, self.window, center=True,
                          pad_mode="reflect", return_complex=True)
        power = spec.real**2 + spec.imag**2
        return (torch.clamp(power, min=LOG_FLOOR) ** 0.5).transpose(1, 2).unsqueeze(1)  # [B, 1, T, F]

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.magnitude(wave), self.fb)

    def n_frames(self, n_samples: int) -> int:
        return 1 + n_samples // self.hop

    def input_phase(self, wave: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        """Render a restored linear mel [B, 1, T, n_mels] on the input wave [B, L] -> [B, L] (synthesis
        'input_phase'): the input's STFT keeps its phase; each bin is scaled by the restored/input mel ratio
        of the bands it belongs to (filter-weighted) where that ratio is at most 1, and where the restored
        mel is louder than the input (ratio > 1 + LOUDER_TOLERANCE: lost bands) the bin takes the larger of
        the input magnitude and the restored mel's least-squares linear magnitude. Bins of exact digital
        silence stay silent (they have no phase to keep)."""
        spec = torch.stft(wave.float(), self.n_fft, self.hop, self.n_fft, self.window, center=True,
                          pad_mode="reflect", return_complex=True)  # [B, F, T]
        magnitude = spec.abs()
        fb = self.fb  # [F, M]
        weight = fb.sum(1)  # [F]: 0 for a bin no filter covers (DC): it takes the gain of the nearest covered bin
        mel_in = torch.matmul(torch.clamp(magnitude**2, min=LOG_FLOOR).sqrt().transpose(1, 2), fb)  # [B, T, M]
        ratio = mel[:, 0] / mel_in.clamp(min=LOG_FLOOR)
        gain = torch.matmul(ratio, fb.T) / weight.clamp(min=LOG_FLOOR)  # [B, T, F]
        gain = gain[..., self.covered_bin].transpose(1, 2)  # [B, F, T]
        least_squares = torch.clamp(torch.matmul(mel[:, 0], self.fb_pinv), min=0).transpose(1, 2)
        louder = gain > 1 + LOUDER_TOLERANCE
        scaled = torch.where(louder, torch.maximum(magnitude, least_squares), magnitude * gain.clamp(max=1))
        phase = spec / magnitude.clamp(min=LOG_FLOOR)
        return torch.istft(scaled * phase, self.n_fft, self.hop, self.n_fft, self.window, center=True,
                           length=wave.shape[-1])
