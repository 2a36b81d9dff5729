"""Voicefixer's analysis module: a BN-GRU mel denoiser, then a ResUNet on the log-mel, added back as a residual.

A re-implementation of voicefixer/restorer/model.py (`Generator`, `BN_GRU`) and model_kqq_bn.py / modules.py
(`UNetResComplex_100Mb`, `ConvBlockRes`, `EncoderBlockRes`, `DecoderBlockRes`) of Voicefixer 0.1.3 (MIT).
Module and parameter names are the official ones, so the `generator.*` entries of the official vf.ckpt load
into `AnalysisModule` unchanged. Widths and depth are params (the official ones in
`VoicefixerModel.official()`); with them the parameter counts are 5.22 M (denoiser) and 65.15 M (ResUNet).

Input and output: a linear mel [B, 1, T, n_mels] in, a log10 mel [B, 1, T, n_mels] out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gensr.voicefixer.frontend import to_log

BN_MOMENTUM = 0.01  # ConvBlockRes' batch norms (the decoder's bn1 keeps PyTorch's 0.1, as official)


def init_layer(layer: nn.Module) -> None:
    nn.init.xavier_uniform_(layer.weight)
    if getattr(layer, "bias", None) is not None:
        layer.bias.data.fill_(0.0)


def init_bn(bn: nn.BatchNorm2d) -> None:
    bn.bias.data.fill_(0.0)
    bn.weight.data.fill_(1.0)


class BN_GRU(nn.Module):
    """BatchNorm2d(1) over [B, 1, T, F], then a batch-first GRU along T."""

    def __init__(self, input_dim: int, hidden_dim: int, layer: int = 1, bidirectional: bool = False):
        super().__init__()
        self.bn = nn.BatchNorm2d(1)
        self.gru = nn.GRU(input_size=input_dim, hidden_size=hidden_dim, num_layers=layer,
                          bidirectional=bidirectional, batch_first=True)
        for name, param in self.gru.named_parameters():
            if "weight_ih" in name:
                nn.init.xavier_uniform_(param.data)
            elif "weight_hh" in name:
                nn.init.orthogonal_(param.data)
            elif "bias" in name:
                param.data.fill_(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.bn(x).squeeze(1))
        return out.unsqueeze(1)


def denoiser(n_mels: int, hidden: int, gru_layers: int) -> nn.Sequential:
    """Mask in (0, 1) per mel bin; official: hidden = 4 * n_mels, 2 GRU layers. Indices are state-dict names."""
    half = hidden // 2
    return nn.Sequential(
        nn.BatchNorm2d(1), nn.Linear(n_mels, half), nn.ReLU(inplace=True),
        nn.BatchNorm2d(1), nn.Linear(half, hidden), nn.Dropout(0.5), nn.ReLU(inplace=True),
        BN_GRU(hidden, half, layer=gru_layers, bidirectional=True),
        BN_GRU(hidden, half, layer=gru_layers, bidirectional=True),
        nn.BatchNorm2d(1), nn.ReLU(inplace=True), nn.Linear(hidden, hidden), nn.Dropout(0.5),
        nn.BatchNorm2d(1), nn.ReLU(inplace=True), nn.Linear(hidden, n_mels), nn.Sigmoid(),
    )


class ConvBlockRes(nn.Module):
    """Pre-activation residual block: BN, leaky ReLU, 3x3 conv, twice; 1x1 conv shortcut if widths differ."""

    def __init__(self, in_channels: int, out_channels: int, size: int = 3):
        super().__init__()
        pad = size // 2
        self.conv1 = nn.Conv2d(in_channels, out_channels, (size, size), padding=(pad, pad), bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(out_channels, out_channels, (size, size), padding=(pad, pad), bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM)
        self.is_shortcut = in_channels != out_channels
        if self.is_shortcut:
            self.shortcut = nn.Conv2d(in_channels, out_channels, (1, 1))
        init_bn(self.bn1)
        init_layer(self.conv1)
        init_layer(self.conv2)
        if self.is_shortcut:
            init_layer(self.shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        origin = x
        x = self.conv1(F.leaky_relu_(self.bn1(x), negative_slope=0.01))
        x = self.conv2(F.leaky_relu_(self.bn2(x), negative_slope=0.01))
        return (self.shortcut(origin) if self.is_shortcut else origin) + x


class EncoderBlockRes(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, blocks: int):
        super().__init__()
        self.n_blocks = blocks
        for i in range(blocks):
            setattr(self, f"conv_block{i + 1}", ConvBlockRes(in_channels if i == 0 else out_channels, out_channels))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for i in range(self.n_blocks):
            x = getattr(self, f"conv_block{i + 1}")(x)
        return F.avg_pool2d(x, kernel_size=(2, 2)), x


class DecoderBlockRes(nn.Module):
    """3x3 stride-2 transposed conv (last time row pruned), concat the skip, then residual blocks."""

    def __init__(self, in_channels: int, out_channels: int, blocks: int):
        super().__init__()
        self.n_blocks = blocks
        self.conv1 = nn.ConvTranspose2d(in_channels, out_channels, (3, 3), stride=(2, 2), bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        for i in range(blocks):  # official names: conv_block2 .. conv_block{blocks + 1}
            setattr(self, f"conv_block{i + 2}", ConvBlockRes(out_channels * 2 if i == 0 else out_channels, out_channels))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.conv1(F.relu_(self.bn1(x)))[:, :, :-1, :]
        x = torch.cat((x, skip), dim=1)
        for i in range(self.n_blocks):
            x = getattr(self, f"conv_block{i + 2}")(x)
        return x


class ResUNet(nn.Module):
    """`UNetResComplex_100Mb`: [B, 2, T, n_mels] (log noisy mel, log denoised mel) -> [B, 1, T, n_mels].

    Time is zero-padded to a multiple of 2**levels; the top mel band is dropped on the way in (so that
    n_mels - 1 = 2**levels * k - 1 halves cleanly) and comes back as zeros on the way out."""

    def __init__(self, channels: list[int], blocks: int, in_channels: int = 2):
        super().__init__()
        self.levels = len(channels)
        self.downsample_ratio = 2**self.levels
        for i, width in enumerate(channels):
            setattr(self, f"encoder_block{i + 1}", EncoderBlockRes(in_channels if i == 0 else channels[i - 1], width, blocks))
        setattr(self, f"conv_block{self.levels + 1}", ConvBlockRes(channels[-1], channels[-1]))
        widths = list(reversed(channels))
        for j, width in enumerate(widths):
            setattr(self, f"decoder_block{j + 1}", DecoderBlockRes(widths[max(j - 1, 0)], width, blocks))
        self.after_conv_block1 = ConvBlockRes(channels[0], channels[0])
        self.after_conv2 = nn.Conv2d(channels[0], 1, (1, 1), bias=True)
        init_layer(self.after_conv2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        origin_len = x.shape[2]
        pad_len = -origin_len % self.downsample_ratio
        x = F.pad(x, pad=(0, 0, 0, pad_len))[..., :-1]
        skips = []
        for i in range(self.levels):
            x, skip = getattr(self, f"encoder_block{i + 1}")(x)
            skips.append(skip)
        x = getattr(self, f"conv_block{self.levels + 1}")(x)
        for j in range(self.levels):
            x = getattr(self, f"decoder_block{j + 1}")(x, skips[-1 - j])
        x = self.after_conv2(self.after_conv_block1(x))
        return {"mel": F.pad(x, pad=(0, 1))[:, :, :origin_len, :]}


class AnalysisModule(nn.Module):
    """The official `Generator`: mel in, restored log-mel out (plus the intermediate maps)."""

    def __init__(self, n_mels: int, denoiser_hidden: int, gru_layers: int, unet_channels: list[int], unet_blocks: int):
        super().__init__()
        self.denoiser = denoiser(n_mels, denoiser_hidden, gru_layers)
        self.unet = ResUNet(unet_channels, unet_blocks)

    def forward(self, mel: torch.Tensor) -> dict[str, torch.Tensor]:
        """mel: linear [B, 1, T, n_mels] -> {'mel': log10 mel, 'clean': denoised linear mel, 'unet_out'}."""
        clean = self.denoiser(mel) * mel
        x = to_log(clean.detach())
        unet_out = self.unet(torch.cat([to_log(mel), x], dim=1))["mel"]
        return {"mel": unet_out + x, "clean": clean, "unet_out": unet_out}
