"""Voicefixer's synthesis module: the TFGAN generator (mel -> waveform) and the mel normalisation before it.

A re-implementation of voicefixer/vocoder/model/generator.py (`Generator`), model/modules.py (`UpsampleNet`,
`ResStack`), model/util.py (`tr_amp_to_db`, `tr_normalize`, `tr_pre`) and base.py (`Vocoder.forward`) of
Voicefixer 0.1.3 (MIT), in the configuration Voicefixer uses (`Config.refresh(44100)`: condition net, no
condition RNN, transposed-conv upsampling, out_channels 1, no smoothing/dropout/skip path). Parameter names
are the official ones: `TFGANGenerator.state_dict()` equals `checkpoint["generator"]` of
model.ckpt-1490000_trimed.pt. Weight norm is `torch.nn.utils.parametrizations.weight_norm`, whose load hook
also accepts the legacy `weight_g` / `weight_v` entries of checkpoints saved with the old API.

`UpsampleNet.skip_conv` exists (and is counted: 33.88 M parameters in the official sizes) but is unused, as in
the official forward (hp=None sets no_skip).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

# The official vocoder's fixed input normalisation (voicefixer/vocoder/config.py): part of the checkpoint's
# interface, not tunable.
MIN_LEVEL_DB = -100.0  # amplitude floor 1e-5 before dB
REF_LEVEL_DB = 20.0  # subtracted after amp -> dB
MIN_DB = -115.0  # dB that maps to -MAX_ABS
MAX_ABS = 4.0  # symmetric clip range of the normalised mel
MEL_WEIGHT_A, MEL_WEIGHT_B = 18.8927416350036, 0.0269863588184314  # per-band weight a * exp(b * k), k = 1..n
PAD_VALUE = -4.0  # tr_pre pads l % 2 + 4 frames of this after the mel


def mel_weight(n_mels: int) -> torch.Tensor:
    """Config.get_mel_weight_torch(percent=1.0) for n_mels bands."""
    return MEL_WEIGHT_A * torch.exp(MEL_WEIGHT_B * torch.linspace(1, n_mels, steps=n_mels))


class UpsampleNet(nn.Module):
    def __init__(self, input_size: int, output_size: int, upsample_factor: int):
        super().__init__()
        self.upsample_factor = upsample_factor
        self.skip_conv = nn.Conv1d(input_size, output_size, kernel_size=1)  # unused (official no_skip)
        self.layer = weight_norm(nn.ConvTranspose1d(
            input_size, output_size, upsample_factor * 2, upsample_factor,
            padding=upsample_factor // 2 + upsample_factor % 2, output_padding=upsample_factor % 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x + torch.sin(x))


class ResStack(nn.Module):
    def __init__(self, channel: int, kernel_size: int, depth: int):
        super().__init__()

        def conv(dilation: int) -> nn.Module:
            return weight_norm(nn.Conv1d(channel, channel, kernel_size, dilation=dilation,
                                         padding=(kernel_size * dilation - dilation) // 2))

        self.layers = nn.ModuleList(
            nn.Sequential(nn.LeakyReLU(), conv(3 ** (i % 10)), nn.LeakyReLU(), conv(1)) for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = x + layer(x)
        return x


class TFGANGenerator(nn.Module):
    """The official `Generator`: normalised mel [B, n_mels, T] -> waveform [B, 1, T * prod(upsample)]."""

    def __init__(self, in_channels: int, channels: int, cond_channels: int, upsample: list[int],
                 resstack_depth: list[int], kernel_size: int):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(5):
            layers += [weight_norm(nn.Conv1d(in_channels if i == 0 else cond_channels, cond_channels, 3, padding=1)),
                       nn.ELU()]
        self.condnet = nn.Sequential(*layers)
        act = nn.LeakyReLU(0.2, True)  # one module used at every stage, as official
        gen: list[nn.Module] = [nn.ReflectionPad1d(3), weight_norm(nn.Conv1d(cond_channels, channels, 7)), act]
        width = channels
        for factor, depth in zip(upsample, resstack_depth):
            gen += [UpsampleNet(width, width // 2, factor), ResStack(width // 2, kernel_size, depth), act]
            width //= 2
        gen += [nn.ReflectionPad1d(3), weight_norm(nn.Conv1d(width, 1, 7)), nn.Tanh()]
        self.generator = nn.Sequential(*gen)

    def forward(self, conditions: torch.Tensor) -> torch.Tensor:
        return self.generator(self.condnet(conditions))


class Vocoder(nn.Module):
    """The official `Vocoder` wrapper: linear mel [B, 1, T, n_mels] -> waveform [B, 1, (T + T % 2 + 4) * hop]."""

    def __init__(self, n_mels: int, channels: int, cond_channels: int, upsample: list[int],
                 resstack_depth: list[int], kernel_size: int, use_mel_weight: bool):
        super().__init__()
        self.n_mels = n_mels
        self.model = TFGANGenerator(n_mels, channels, cond_channels, upsample, resstack_depth, kernel_size)
        weight = mel_weight(n_mels) if use_mel_weight else torch.ones(n_mels)
        self.register_buffer("weight_torch", weight[None, None, None, :], persistent=False)

    @staticmethod
    def normalise(mel: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """tr_normalize(tr_amp_to_db(|mel / weight|) - 20): [-4, 4], clipped."""
        min_level = torch.exp(MIN_LEVEL_DB / 20 * torch.log(torch.tensor(10.0))).type_as(mel)
        db = 20 * torch.log10(torch.maximum(min_level, torch.abs(mel / weight))) - REF_LEVEL_DB
        return torch.clip((2 * MAX_ABS) * ((db - MIN_DB) / (-MIN_DB)) - MAX_ABS, -MAX_ABS, MAX_ABS)

    def conditions(self, mel: torch.Tensor) -> torch.Tensor:
        """Normalised, transposed to [B, n_mels, T] and tail-padded (tr_pre)."""
        x = self.normalise(mel, self.weight_torch.type_as(mel))[:, 0].transpose(1, 2)
        pad = x.shape[-1] % 2 + 4
        return torch.cat([x, x.new_full((x.shape[0], self.n_mels, pad), PAD_VALUE)], dim=-1)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.model(self.conditions(mel))
