"""Training and batched inference of the Voicefixer.

`train_voicefixer(model, pairs, cfg)` runs two Lightning loops (gensr.train.loop.fit: seeded crops, AdamW,
warm-up + cosine):
1. the analysis module (denoiser + ResUNet) on (degraded, target) crops, with the official objective:
   L1 between the restored log10-mel and the target's log10-mel, plus L1 between the denoiser's masked
   linear mel and the target's mel (voicefixer/restorer/model.py, training_step, before its GAN phase);
2. the vocoder on target crops, mel -> waveform, with a multi-resolution STFT loss (spectral convergence +
   log-magnitude L1, as Parallel WaveGAN) plus `mel_loss_weight` x L1 on the log-mel of the output.
   No discriminator: the budget is minutes on 2 CPU cores, where a GAN's extra discriminator passes halve
   the generator steps and its adversarial term only starts paying off after tens of thousands of steps;
   the STFT + mel losses converge within the budget (at the price of some buzz/phasiness). With
   `synthesis: input_phase` the vocoder is not used, and not trained.
It is used for the initial Voicefixer (degraded speech -> clean speech) and for fine-tuning on
(degraded singing, pseudo-label) pairs, where `cfg.freeze_vocoder` keeps the vocoder as it is.

`restore(model, waves)` restores one clip or a list: clips are sorted by length, zero-padded into batches,
and each output is cut at the offset it would have alone. The padding still reaches the last frames of a
shorter clip through the bidirectional GRU and the convolutions (their head is unchanged to ~1e-7), so
batched and single outputs differ near the end of the shorter clips. The official restore_inmem cuts audio
into 30 s segments; this restores each clip whole (the same result for clips up to 30 s).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from gensr.config.voicefixer import VoicefixerTrain
from gensr.train.data import Clip, pad_batch
from gensr.train.loop import fit
from gensr.voicefixer.frontend import from_log, to_log
from gensr.voicefixer.model import Voicefixer

MAG_FLOOR = 1e-7  # STFT-loss magnitude floor (Parallel WaveGAN)
MEL_LOSS_FLOOR = 1e-5  # log-mel floor of the vocoder's mel loss (~ -100 dB; quieter detail does not count)


def frame_mask(lengths: torch.Tensor, frames: int, hop: int) -> torch.Tensor:
    """[B, 1, frames, 1]: 1 where the frame centre lies inside the clip (crops shorter than the crop length)."""
    centres = torch.arange(frames, device=lengths.device) * hop
    return (centres[None, :] < lengths[:, None]).float()[:, None, :, None]


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weight = mask.expand_as(pred)
    return (weight * (pred - target).abs()).sum() / weight.sum().clamp(min=1.0)


def analysis_loss(model: Voicefixer):
    def loss(degraded: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            mel_target = model.mel(target)
        out = model.analyse(model.mel(degraded))
        mask = frame_mask(lengths, mel_target.shape[2], model.config.hop)
        return masked_l1(out["mel"], to_log(mel_target), mask) + masked_l1(out["clean"], mel_target, mask)

    return loss


def stft_magnitude(wave: torch.Tensor, n_fft: int, hop: int, win: int) -> torch.Tensor:
    window = torch.hann_window(win, device=wave.device)
    spec = torch.stft(wave, n_fft, hop, win, window, center=True, return_complex=True)
    return torch.clamp(spec.real**2 + spec.imag**2, min=MAG_FLOOR).sqrt()


def multi_resolution_stft_loss(pred: torch.Tensor, target: torch.Tensor, resolutions: list[list[int]]) -> torch.Tensor:
    total = pred.new_zeros(())
    for n_fft, hop, win in resolutions:
        p, t = stft_magnitude(pred, n_fft, hop, win), stft_magnitude(target, n_fft, hop, win)
        sc = torch.linalg.norm(t - p, dim=(1, 2)) / torch.linalg.norm(t, dim=(1, 2)).clamp(min=MAG_FLOOR)
        total = total + sc.mean() + F.l1_loss(torch.log(p), torch.log(t))
    return total / len(resolutions)


def vocoder_loss(model: Voicefixer, cfg: VoicefixerTrain):
    def log_mel(wave: torch.Tensor) -> torch.Tensor:
        return torch.log10(torch.clamp(model.mel(wave), min=MEL_LOSS_FLOOR))

    def loss(_degraded: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            mel = model.mel(target)
        start = model.trim_start(target.shape[-1])
        wave = model.synthesise(mel)[:, start : start + target.shape[-1]]
        total = multi_resolution_stft_loss(wave, target, cfg.stft_resolutions)
        if cfg.mel_loss_weight > 0:
            total = total + cfg.mel_loss_weight * F.l1_loss(log_mel(wave), torch.log10(torch.clamp(mel, min=MEL_LOSS_FLOOR)))
        return total

    return loss


def _clips(pairs: Sequence[tuple[np.ndarray, np.ndarray]], with_degraded: bool) -> list[Clip]:
    clips = []
    for i, (degraded, target) in enumerate(pairs):
        degraded, target = np.asarray(degraded, np.float32), np.asarray(target, np.float32)
        if degraded.shape != target.shape or degraded.ndim != 1:
            raise ValueError(f"pair {i}: degraded {degraded.shape} and target {target.shape} must be equal-length 1-D waves")
        clips.append(Clip(f"pair{i:05d}", degraded if with_degraded else None, target))
    return clips


def train_voicefixer(model: Voicefixer, pairs: Sequence[tuple[np.ndarray, np.ndarray]], cfg: VoicefixerTrain,
                     logger=None, *, seed: int = 0) -> dict:
    """Train `model` in place on (degraded, target) waves at model.sample_rate; returns a summary:
    {analysis: {final_loss, seconds, steps}, vocoder: {...} or None (frozen)}."""
    if not pairs:
        raise ValueError("train_voicefixer: no (degraded, target) pairs")
    sr = model.sample_rate
    summary: dict = {"n_pairs": len(pairs), "seed": seed, "freeze_vocoder": cfg.freeze_vocoder}
    summary["analysis"] = fit(model, analysis_loss(model), list(model.generator.parameters()), _clips(pairs, True),
                              cfg.analysis, sr, seed, logger, metric_name="voicefixer/analysis_loss")
    if cfg.freeze_vocoder or model.config.synthesis != "vocoder":  # frozen, or not used by the synthesis
        summary["vocoder"] = None
    else:
        summary["vocoder"] = fit(model, vocoder_loss(model, cfg), list(model.vocoder.parameters()),
                                 _clips(pairs, False), cfg.vocoder, sr, seed + 1, logger,
                                 metric_name="voicefixer/vocoder_loss")
    model.eval()
    return summary


@torch.no_grad()
def restore(model: Voicefixer, waves: np.ndarray | Sequence[np.ndarray], batch_size: int = 8):
    """Restore one 1-D wave (returns a wave) or a list of them (returns a list), at model.sample_rate."""
    single = isinstance(waves, np.ndarray) and waves.ndim == 1
    items = [waves] if single else list(waves)
    model.eval()
    min_len = model.config.n_fft // 2 + 1  # the reflect padding of the centred STFT needs this much
    order = sorted(range(len(items)), key=lambda i: len(items[i]))
    out: list[np.ndarray | None] = [None] * len(items)
    for b in range(0, len(order), batch_size):
        chunk = order[b : b + batch_size]
        batch, lengths = pad_batch([np.asarray(items[i], np.float32) for i in chunk])
        if batch.shape[-1] < min_len:
            batch = F.pad(batch, (0, min_len - batch.shape[-1]))
        raw = model.render(batch, from_log(model.analyse(model.mel(batch))["mel"]))
        for i, wave in zip(chunk, model.trim(raw, lengths.tolist())):
            out[i] = wave.numpy().astype(np.float32)
    return out[0] if single else out
