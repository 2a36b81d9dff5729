"""Params of the codec, the three restorers (model sizes, SFT training, sampling knobs) and
candidate sampling. Sizes live here so that a GPU user scales up by params alone."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from gensr.config.base import Block
from gensr.config.cores import CoreCount


class StftFeatures(Block):
    n_fft: int = Field(gt=0, description="FFT size of the log-magnitude front end (bins = n_fft/2 + 1).")
    hop: int = Field(gt=0, description="Hop in samples; waveforms are padded to a multiple of it internally.")
    log_floor: float = Field(gt=0, description="Magnitude floor inside log(|X| + floor).")

    @model_validator(mode="after")
    def _check(self):
        if self.hop > self.n_fft:
            raise ValueError("hop must not exceed n_fft")
        return self


class TrainLoop(Block):
    """One SFT (or codec) optimisation run: fixed random crops, AdamW, cosine decay after warm-up."""

    steps: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    lr: float = Field(gt=0)
    warmup_steps: int = Field(ge=0)
    weight_decay: float = Field(ge=0)
    grad_clip: float = Field(gt=0)
    crop_seconds: float = Field(gt=0, description="Training crop length; shorter clips are zero-padded.")


class CodecModel(Block):
    latent_dim: int = Field(gt=0)
    hidden: int = Field(gt=0)
    layers: int = Field(ge=1)
    kernel: int = Field(ge=1)
    n_codebooks: int = Field(ge=1, description="Residual VQ levels (tokens per frame).")
    codebook_size: int = Field(ge=2)


class SpectralCodecParams(Block):
    model: CodecModel
    autoencoder: TrainLoop = Field(description="Phase 1: continuous autoencoder.")
    decoder_finetune: TrainLoop = Field(description="Phase 3: decoder on quantised latents + the degraded input.")
    code_noise: float = Field(ge=0, lt=1, description="Phase 3: fraction of codes replaced by random ones.")
    kmeans_frames: int = Field(gt=0, description="Latent frames sampled for the k-means codebooks.")
    kmeans_iters: int = Field(gt=0)
    eval_clips: int | None = Field(gt=0, description="Test clips for the codec ceiling (null = all).")


class TokenModel(Block):
    d_model: int = Field(gt=0)
    heads: int = Field(gt=0)
    layers: int = Field(ge=1)
    cond_layers: int = Field(ge=1, description="Residual conv layers of the degraded-feature encoder.")
    cond_kernel: int = Field(ge=1)


class SharedStepsSampling(Block):
    """A sampler whose first `shared_steps` steps run once per clip before each candidate takes
    its own; `steps_field` names the field holding the total number of steps."""

    steps_field: ClassVar[str]
    shared_steps: int = Field(
        0, ge=0,
        description="Steps run once per clip before the candidates diverge (MGM: greedy decoding; FM: the "
        "noise-free flow path, then each candidate joins with the path's noise); 0 = the plain sampler.",
    )

    @model_validator(mode="after")
    def _leaves_a_step_per_candidate(self):
        steps = getattr(self, self.steps_field)
        if self.shared_steps >= steps:
            raise ValueError(f"shared_steps ({self.shared_steps}) must be smaller than {self.steps_field} ({steps})")
        return self


class ARSampling(Block):
    temperature: float = Field(gt=0)
    top_k: int = Field(ge=0, description="0 = no top-k filter.")


class MGMSampling(SharedStepsSampling):
    steps_field: ClassVar[str] = "steps"
    steps: int = Field(ge=1, description="Parallel decoding iterations (MaskGIT cosine schedule).")
    temperature: float = Field(gt=0)
    top_k: int = Field(ge=0)
    confidence_noise: float = Field(ge=0, description="Scale of the annealed Gumbel noise on confidences.")


class FMModel(Block):
    hidden: int = Field(gt=0)
    layers: int = Field(ge=1)
    kernel: int = Field(ge=1)
    time_dim: int = Field(gt=0)
    noise_scale: float = Field(gt=0, description="sigma of the flow's start x0 = degraded + sigma * eps.")
    score_draws: int = Field(ge=1, description="(t, eps) draws averaged in the DPO preference score.")


class FMSampling(SharedStepsSampling):
    steps_field: ClassVar[str] = "ode_steps"
    ode_steps: int = Field(ge=1, description="Euler steps from t=0 to t=1.")
    noise_factor: float = Field(ge=0, description="Scale on sigma at sampling time (1 = as trained).")


class ARParams(Block):
    model: TokenModel
    train: TrainLoop
    sampling: ARSampling


class MGMParams(Block):
    model: TokenModel
    train: TrainLoop
    sampling: MGMSampling


class FMParams(Block):
    model: FMModel
    train: TrainLoop
    sampling: FMSampling


class RestorersParams(Block):
    features: StftFeatures
    threads: CoreCount = Field(description="torch CPU threads for training, sampling and restoring (`auto`: one per "
                               "available core). Trained weights and sampled audio depend on it.")
    eval_clips: int | None = Field(gt=0, description="Test clips restored and scored after SFT (null = all).")
    log_examples: int = Field(ge=0, description="Audio + spectrogram examples logged to MLflow per run.")
    restore_batch: int = Field(gt=0, description="Clips per batched restore call.")
    ar: ARParams
    mgm: MGMParams
    fm: FMParams


class SampleParams(Block):
    n_candidates: int = Field(ge=1)
    n_clips: int | None = Field(gt=0, description="Clips of `split` used for preference pairs (null = all).")
    split: str = Field(description="Split of the degraded corpus to sample from: pref (the pool no SFT stage trains "
                       "on), train or valid; never test.")
    shard_clips: int = Field(gt=0, description="Clips per resumable shard (one batched restore call each).")
    seed: int
