"""Voicefixer (Liu et al. 2021) in this project: a discriminative mel restorer + neural vocoder.

- `frontend`: the shared STFT / mel front end; `analysis`: BN-GRU denoiser + ResUNet; `vocoder`: TFGAN.
- `model`: the whole model, the project's checkpoints and `load_official` for the published weights.
- `train`: `train_voicefixer` (initial model and pseudo-label fine-tuning) and batched `restore`.

Sizes come from params (`voicefixer.model`); `VoicefixerModel.official()` gives the published ones. The
`voicefixer` PyPI package is not needed at run time (only the faithfulness test imports it).
"""

from gensr.voicefixer.model import (
    Voicefixer,
    build_voicefixer,
    load_official,
    load_voicefixer,
    save_voicefixer,
    voicefixer_from_params,
)

__all__ = ["Voicefixer", "build_voicefixer", "load_official", "load_voicefixer", "save_voicefixer",
           "voicefixer_from_params"]
