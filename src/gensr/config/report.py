"""Params of the demo page (`gensr demo-page` -> reports/demo/index.html)."""

from __future__ import annotations

from pydantic import Field, model_validator

from gensr.config.base import Block


class SpectrogramParams(Block):
    """Log-magnitude STFT images beside each audio player (one shared colour scale per row of a clip)."""

    n_fft: int = Field(ge=64, description="FFT size (samples); the image has n_fft/2 + 1 rows.")
    hop: int = Field(ge=16, description="Hop (samples) between columns.")
    db_range: float = Field(gt=10, description="dB shown below the loudest bin of the row; quieter is black.")
    cmap: str = Field(description="A matplotlib colormap name.")

    @model_validator(mode="after")
    def _hop_fits(self):
        if self.hop > self.n_fft:
            raise ValueError(f"hop ({self.hop}) must not exceed n_fft ({self.n_fft})")
        return self


class ReportParams(Block):
    clips_per_paradigm: int = Field(
        ge=1, le=50, description="Test clips shown per paradigm, drawn with `seed` from the clips every paradigm "
        "restored (the same clips across paradigms when they share them): a random draw, not a selection.")
    spectrogram: SpectrogramParams
