"""The whole Voicefixer (mel front end, analysis module, vocoder), its checkpoints, and the official weights.

`Voicefixer.state_dict()` has the official key names: `generator.*` (analysis) and `vocoder.model.*` (TFGAN),
as the official `voicefixer.restorer.model.VoiceFixer`; front-end buffers are not saved (they are
recomputed from the config).

Checkpoints
- The project's own: `save_voicefixer` / `load_voicefixer`, one file {format, version, config, state_dict,
  extra}, loaded with torch.load(weights_only=True).
- The official pair: `load_official(analysis_ckpt, vocoder_ckpt)` builds the official sizes
  (`VoicefixerModel.official()`) and loads vf.ckpt (a plain state dict of the official VoiceFixer module)
  and model.ckpt-1490000_trimed.pt ({"generator": state dict, ...}) the way voicefixer 0.1.3 does. Both are
  read with weights_only=True; a file that needs full unpickling is refused unless the caller passes
  `trust_pickle=True` (only for files from a trusted source). The real Zenodo files could not be fetched
  here: the loader is tested on random official modules saved in that layout (vocoder keys in the legacy
  weight_g / weight_v form as well), not on the published files themselves.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from gensr.config.voicefixer import VoicefixerModel, VoicefixerParams
from gensr.storage import save_torch
from gensr.voicefixer.analysis import AnalysisModule
from gensr.voicefixer.frontend import MelFrontEnd, from_log
from gensr.voicefixer.vocoder import Vocoder

CKPT_FORMAT = "gensr-voicefixer"
CKPT_VERSION = 1


class Voicefixer(nn.Module):
    def __init__(self, config: VoicefixerModel):
        super().__init__()
        self.config = config
        c = config
        self.frontend = MelFrontEnd(c.sample_rate, c.n_fft, c.hop, c.n_mels)
        self.generator = AnalysisModule(c.n_mels, c.denoiser_hidden, c.denoiser_gru_layers, c.unet_channels,
                                        c.unet_blocks)
        self.vocoder = Vocoder(c.n_mels, c.vocoder_channels, c.vocoder_cond_channels, c.vocoder_upsample,
                               c.vocoder_resstack_depth, c.vocoder_kernel, c.vocoder_mel_weight)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    def mel(self, wave: torch.Tensor) -> torch.Tensor:
        """wave [B, L] -> linear mel [B, 1, 1 + L // hop, n_mels]."""
        return self.frontend(wave)

    def analyse(self, mel: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.generator(mel)

    def synthesise(self, mel: torch.Tensor) -> torch.Tensor:
        """Linear mel [B, 1, T, n_mels] -> waveform [B, (T + T % 2 + 4) * hop] (uncut)."""
        return self.vocoder(mel)[:, 0]

    def render(self, wave: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        """Restored linear mel [B, 1, T, n_mels] of the input wave [B, L] -> waveform, by
        `config.synthesis`: the vocoder's raw output (uncut, cut it with `trim`), or the input-phase
        rendering, exactly [B, L]."""
        if self.config.synthesis == "input_phase":
            return self.frontend.input_phase(wave, mel)
        return self.synthesise(mel)

    def trim_start(self, length: int) -> int:
        """Where a clip of `length` samples starts in the vocoder output of its own mel: 'center' cuts the
        surplus evenly as the official _trim_center (the surplus is always >= 4 hops), 'start' keeps 0.
        The input-phase rendering is aligned with its input: 0."""
        if self.config.output_trim == "start" or self.config.synthesis == "input_phase":
            return 0
        frames = self.frontend.n_frames(length)
        return ((frames + frames % 2 + 4) * self.config.hop - length) // 2

    def trim(self, wave: torch.Tensor, lengths: list[int]) -> list[torch.Tensor]:
        """Per clip of a zero-padded batch: its own samples, cut as if it had been restored alone."""
        return [wave[i, self.trim_start(n) : self.trim_start(n) + n] for i, n in enumerate(lengths)]

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Degraded wave [B, L] -> restored wave [B, L]."""
        log_mel = self.analyse(self.mel(wave))["mel"]
        raw = self.render(wave, from_log(log_mel))
        start = self.trim_start(wave.shape[-1])
        return raw[:, start : start + wave.shape[-1]]

    def parameter_counts(self) -> dict[str, int]:
        count = lambda m: sum(p.numel() for p in m.parameters())
        return {"denoiser": count(self.generator.denoiser), "unet": count(self.generator.unet),
                "vocoder": count(self.vocoder.model)}


def build_voicefixer(config: VoicefixerModel | dict) -> Voicefixer:
    if isinstance(config, dict):
        config = VoicefixerModel.model_validate(config)
    return Voicefixer(config)


def voicefixer_from_params(params: VoicefixerParams) -> Voicefixer:
    """The official model when both official_* paths are set, else a fresh model of `params.model`."""
    paths = (params.official_analysis_ckpt, params.official_vocoder_ckpt)
    if paths == (None, None):
        return build_voicefixer(params.model)
    if None in paths:
        unset = "official_analysis_ckpt" if paths[0] is None else "official_vocoder_ckpt"
        raise ValueError(f"voicefixer.{unset} is null: the official model needs both checkpoints")
    return load_official(*(Path(p).expanduser() for p in paths))


# --- the project's own checkpoints ---------------------------------------------------------------------
def save_voicefixer(model: Voicefixer, path: str | Path, extra: dict | None = None) -> Path:
    """Write {format, version, config, state_dict, extra}; `extra` must hold plain types."""
    payload = {"format": CKPT_FORMAT, "version": CKPT_VERSION, "config": model.config.model_dump(mode="json"),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "extra": extra or {}}
    return save_torch(payload, path)  # atomic and byte-reproducible


def load_voicefixer(path: str | Path) -> Voicefixer:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: Voicefixer checkpoint not found (train it first, see dvc.yaml)")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CKPT_FORMAT:
        raise ValueError(f"{path}: not a gensr Voicefixer checkpoint (for the official vf.ckpt and vocoder "
                         "files use gensr.voicefixer.load_official)")
    if payload["version"] != CKPT_VERSION:
        raise ValueError(f"{path}: checkpoint version {payload['version']}, this code reads {CKPT_VERSION}")
    model = build_voicefixer(payload["config"])
    model.load_state_dict(payload["state_dict"])
    return model.eval()


# --- the official checkpoints -------------------------------------------------------------------------
def _read_official(path: str | Path | None, param: str, what: str, trust_pickle: bool):
    if path is None or not Path(path).is_file():
        raise FileNotFoundError(
            f"{param}: the official Voicefixer {what} was not found at {path!r}. Download it (Zenodo record "
            f"{'5600188' if 'analysis' in param else '5469951'}) and set {param} to its path.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError: the file holds more than tensors and plain containers
        if not trust_pickle:
            raise ValueError(
                f"{param}: {path} cannot be read with torch.load(weights_only=True) ({type(err).__name__}: "
                f"{str(err).splitlines()[0]}). If the file comes from a source you trust, load it with "
                "trust_pickle=True.") from err
        return torch.load(path, map_location="cpu", weights_only=False)


def load_official(analysis_ckpt: str | Path | None, vocoder_ckpt: str | Path | None, *,
                  config: VoicefixerModel | None = None, trust_pickle: bool = False) -> Voicefixer:
    """The official Voicefixer from vf.ckpt and model.ckpt-1490000_trimed.pt, as voicefixer 0.1.3 loads it.

    Order as in voicefixer.base.VoiceFixer: the vocoder file first (`checkpoint["generator"]`, strict), then
    every entry of vf.ckpt whose key exists in the model (so vf.ckpt wins where both hold a tensor). Every
    `generator.*` weight of the analysis module must be present in vf.ckpt."""
    config = config or VoicefixerModel.official()
    voc = _read_official(vocoder_ckpt, "voicefixer.official_vocoder_ckpt", "vocoder checkpoint", trust_pickle)
    ana = _read_official(analysis_ckpt, "voicefixer.official_analysis_ckpt", "analysis checkpoint (vf.ckpt)",
                         trust_pickle)
    model = Voicefixer(config)
    voc_state = voc.get("generator") if isinstance(voc, dict) else None
    if not isinstance(voc_state, dict):
        raise TypeError(f"voicefixer.official_vocoder_ckpt: {vocoder_ckpt} has no 'generator' state dict")
    model.vocoder.model.load_state_dict(voc_state, strict=True)
    if isinstance(ana, dict) and isinstance(ana.get("state_dict"), dict):  # a Lightning checkpoint
        ana = ana["state_dict"]
    if not isinstance(ana, dict):
        raise TypeError(f"voicefixer.official_analysis_ckpt: {analysis_ckpt} is not a state dict")
    own = model.state_dict()
    missing = [k for k in own if k.startswith("generator.") and k not in ana]
    if missing:
        raise ValueError(f"voicefixer.official_analysis_ckpt: {analysis_ckpt} lacks {len(missing)} analysis "
                         f"weights of the configured sizes, e.g. {missing[:3]}")
    for key, value in ana.items():
        if key in own and own[key].shape != value.shape:
            raise ValueError(f"voicefixer.official_analysis_ckpt: {key} has shape {tuple(value.shape)}, the "
                             f"configured model {tuple(own[key].shape)}")
    model.load_state_dict({k: v for k, v in ana.items() if k in own}, strict=False)
    return model.eval()
