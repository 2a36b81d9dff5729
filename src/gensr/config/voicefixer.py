"""Params of the Voicefixer restorer (block `voicefixer`): architecture sizes, its two training runs
(the initial model on the speech corpus, then fine-tuning on singing pseudo-labels) and inference.

The architecture follows Voicefixer 0.1.3 (Liu et al. 2021): a BN-GRU mel denoiser and a ResUNet on the
log-mel (analysis), then a TFGAN vocoder (synthesis). `VoicefixerModel.official()` gives the sizes of the
published checkpoints (44.1 kHz, 128 mels: 5.2 M + 65 M + 34 M parameters); params.yaml holds a narrow
16 kHz version that trains on 2 CPU cores in minutes.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from gensr.config.base import Block
from gensr.config.models import TrainLoop


class VoicefixerModel(Block):
    """Sizes of the three networks and the mel front end they share."""

    sample_rate: int = Field(gt=0, description="Sample rate of the waveforms in and out (Hz); official 44100.")
    n_fft: int = Field(gt=0, description="STFT size (and Hann window length) of the mel front end; official 2048.")
    hop: int = Field(gt=0, description="STFT hop in samples = vocoder upsampling factor; official 441 (10 ms).")
    n_mels: int = Field(gt=0, description="Mel bands (HTK scale, no area norm, f_min 0, f_max = Nyquist); official "
                        "128. Must be a multiple of 2**len(unet_channels).")
    denoiser_hidden: int = Field(gt=0, description="Width of the BN-GRU denoiser: Linear n_mels -> hidden/2 -> "
                                 "hidden, bidirectional GRUs of hidden/2 per direction; official 512 (4 x n_mels).")
    denoiser_gru_layers: int = Field(ge=1, description="Layers of each of the two BN-GRU blocks; official 2.")
    unet_channels: list[int] = Field(min_length=1, description="Channels of the ResUNet encoder levels (each "
                                     "halves time and mel); the decoder mirrors them. Official [32, 64, 128, 256, 384, "
                                     "384].")
    unet_blocks: int = Field(ge=1, description="Residual conv blocks per encoder and per decoder level; official 4.")
    vocoder_channels: int = Field(gt=0, description="Channels after the vocoder's input conv, halved by every "
                                  "upsampling stage; official 1024.")
    vocoder_cond_channels: int = Field(gt=0, description="Channels of the vocoder's 5-conv condition net; official 512.")
    vocoder_upsample: list[int] = Field(min_length=1, description="Transposed-conv upsampling factors; their "
                                        "product must equal hop. Official [7, 7, 3, 3].")
    vocoder_resstack_depth: list[int] = Field(min_length=1, description="Dilated residual layers (dilation 3**i) "
                                              "after each upsampling stage; official [8, 8, 8, 8].")
    vocoder_kernel: int = Field(ge=1, description="Kernel of the residual-stack convs (odd); official 3.")
    vocoder_mel_weight: bool = Field(description="Divide the mel by the official per-band weight curve "
                                     "18.89 * exp(0.027 k) before the vocoder's dB normalisation (official: true; "
                                     "fitted to 128 bands at 44.1 kHz).")
    output_trim: Literal["center", "start"] = Field(description="How the vocoder output (a few padded frames "
                                                    "longer than the input) is cut to the input length: 'center' "
                                                    "as official restore_inmem, 'start' keeps a fixed alignment "
                                                    "(what training here uses).")
    synthesis: Literal["vocoder", "input_phase"] = Field(
        default="vocoder",
        description="How the restored mel becomes a waveform. 'vocoder': the TFGAN vocoder (official; it needs "
        "long training: trained here for minutes, its copy-synthesis of clean speech scores below the degraded "
        "input). 'input_phase': the input's STFT with its phase kept; each bin is scaled by the restored/input "
        "mel ratio where that ratio is at most 1 (noise, reverb removed), and where the restored mel is louder "
        "than the input (lost bands) it takes the larger of the input magnitude and the restored mel's "
        "least-squares linear magnitude. No vocoder is trained or used then.")

    @classmethod
    def official(cls) -> VoicefixerModel:
        """The configuration of the published checkpoints vf.ckpt + model.ckpt-1490000_trimed.pt."""
        return cls(sample_rate=44100, n_fft=2048, hop=441, n_mels=128, denoiser_hidden=512, denoiser_gru_layers=2,
                   unet_channels=[32, 64, 128, 256, 384, 384], unet_blocks=4, vocoder_channels=1024,
                   vocoder_cond_channels=512, vocoder_upsample=[7, 7, 3, 3], vocoder_resstack_depth=[8, 8, 8, 8],
                   vocoder_kernel=3, vocoder_mel_weight=True, output_trim="center", synthesis="vocoder")

    @model_validator(mode="after")
    def _check(self):
        if self.hop > self.n_fft:
            raise ValueError(f"hop ({self.hop}) must not exceed n_fft ({self.n_fft})")
        if math.prod(self.vocoder_upsample) != self.hop:
            raise ValueError(f"vocoder_upsample {self.vocoder_upsample} multiplies to "
                             f"{math.prod(self.vocoder_upsample)}, not hop ({self.hop})")
        if len(self.vocoder_resstack_depth) != len(self.vocoder_upsample):
            raise ValueError("vocoder_resstack_depth needs one entry per vocoder_upsample stage")
        if self.vocoder_channels % 2 ** len(self.vocoder_upsample):
            raise ValueError(f"vocoder_channels ({self.vocoder_channels}) must be divisible by "
                             f"2**{len(self.vocoder_upsample)} (halved at every upsampling stage)")
        if self.n_mels % 2 ** len(self.unet_channels):
            raise ValueError(f"n_mels ({self.n_mels}) must be a multiple of 2**len(unet_channels) = "
                             f"{2 ** len(self.unet_channels)}: the ResUNet drops the top band and halves the rest "
                             "at every level, and its skip connections only line up then")
        if self.denoiser_hidden % 4:
            raise ValueError(f"denoiser_hidden ({self.denoiser_hidden}) must be a multiple of 4")
        if self.vocoder_kernel % 2 == 0:
            raise ValueError(f"vocoder_kernel ({self.vocoder_kernel}) must be odd")
        return self


class VoicefixerTrain(Block):
    """One training run: the analysis module (L1 on the log-mel toward the target's mel, plus the official
    linear-mel L1 on the denoiser's output), then the vocoder on the target audio (mel -> waveform)."""

    analysis: TrainLoop = Field(description="Optimisation of the denoiser + ResUNet on (degraded, target) crops.")
    vocoder: TrainLoop = Field(description="Optimisation of the vocoder on target crops (skipped if frozen).")
    freeze_vocoder: bool = Field(description="Keep the vocoder as it is (fine-tuning on pseudo-labels).")
    stft_resolutions: list[list[int]] = Field(min_length=1, description="Multi-resolution STFT loss of the "
                                              "vocoder: [n_fft, hop, win] per resolution.")
    mel_loss_weight: float = Field(ge=0, description="Weight of the vocoder's log-mel L1 next to the STFT loss.")

    @model_validator(mode="after")
    def _check(self):
        for res in self.stft_resolutions:
            if len(res) != 3 or min(res) <= 0 or res[2] > res[0]:
                raise ValueError(f"stft_resolutions entry {res} must be [n_fft, hop, win] with 0 < win <= n_fft")
        return self


class VoicefixerParams(Block):
    model: VoicefixerModel = Field(description="Sizes of the initial Voicefixer trained here.")
    train: VoicefixerTrain = Field(description="The initial Voicefixer on (degraded, clean) speech of the corpus.")
    finetune: VoicefixerTrain = Field(description="Fine-tuning on (degraded singing, pseudo-label) pairs.")
    restore_batch: int = Field(ge=1, description="Clips per batched restore call (sorted by length, zero-padded).")
    log_examples: int = Field(ge=0, description="Audio examples (WAVs + spectrograms) logged to each training run's "
                              "MLflow run.")
    official_analysis_ckpt: str | None = Field(description="Path of the official vf.ckpt (analysis module), or "
                                               "null. Loading it selects the official 44.1 kHz sizes.")
    official_vocoder_ckpt: str | None = Field(description="Path of the official model.ckpt-1490000_trimed.pt "
                                              "(TFGAN vocoder), or null.")
