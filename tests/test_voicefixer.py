"""Voicefixer: official sizes, faithfulness to voicefixer 0.1.3, training, checkpoints, batched restore.

The faithfulness test imports the official package (a dev dependency) with its import-time download kept away:
HOME and os.path.expanduser point at a temporary folder holding placeholder checkpoints in the format its
import and constructors read, urllib's urlretrieve refuses, and the official classes get random weights
that are saved in the official file layout and loaded by gensr.voicefixer.load_official.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import time
import urllib.request

import numpy as np
import pytest
import torch

from gensr.config.voicefixer import VoicefixerModel, VoicefixerTrain
from gensr.voicefixer import (
    build_voicefixer,
    load_official,
    load_voicefixer,
    save_voicefixer,
)

torch.set_num_threads(1)

VF_REL = ".cache/voicefixer/analysis_module/checkpoints/vf.ckpt"
VOC_REL = ".cache/voicefixer/synthesis_module/44100/model.ckpt-1490000_trimed.pt"


def tiny_config(**overrides) -> VoicefixerModel:
    cfg = {"sample_rate": 16000, "n_fft": 512, "hop": 160, "n_mels": 32, "denoiser_hidden": 32,
           "denoiser_gru_layers": 1, "unet_channels": [8, 8], "unet_blocks": 1, "vocoder_channels": 32,
           "vocoder_cond_channels": 16, "vocoder_upsample": [5, 4, 4, 2], "vocoder_resstack_depth": [1, 1, 1, 1],
           "vocoder_kernel": 3, "vocoder_mel_weight": False, "output_trim": "start"}
    return VoicefixerModel(**{**cfg, **overrides})


def tiny_train(steps: int = 6, freeze_vocoder: bool = False) -> VoicefixerTrain:
    loop = {"steps": steps, "batch_size": 2, "lr": 3e-3, "warmup_steps": 0, "weight_decay": 0.0, "grad_clip": 1.0,
            "crop_seconds": 0.3}
    return VoicefixerTrain(analysis=loop, vocoder=loop, freeze_vocoder=freeze_vocoder,
                           stft_resolutions=[[256, 64, 256], [512, 128, 512]], mel_loss_weight=1.0)


def speech_like(seconds: float, sr: int, seed: int) -> np.ndarray:
    """A harmonic tone with a syllable-rate envelope: a stand-in for speech."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 110 + 40 * rng.random()
    wave = sum(np.sin(2 * np.pi * k * f0 * t + rng.random() * 6) / k for k in range(1, 8))
    return (0.2 * wave * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def pairs_of(n: int, seconds: float, sr: int) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for i in range(n):
        clean = speech_like(seconds, sr, i)
        noise = np.random.default_rng(100 + i).normal(0, 0.05, clean.shape).astype(np.float32)
        out.append((clean + noise, clean))
    return out


# --- config -----------------------------------------------------------------------------------------------
def test_official_profile_sizes_and_shapes():
    model = build_voicefixer(VoicefixerModel.official()).eval()
    counts = model.parameter_counts()
    for name, expected in (("denoiser", 5.2e6), ("unet", 65e6), ("vocoder", 34e6)):
        assert abs(counts[name] - expected) / expected < 0.03, counts
    assert counts == {"denoiser": 5_223_820, "unet": 65_153_189, "vocoder": 33_883_330}  # voicefixer 0.1.3
    mel = torch.rand(1, 1, 11, 128)
    with torch.no_grad():
        assert model.analyse(mel)["mel"].shape == (1, 1, 11, 128)
        assert model.synthesise(mel).shape == (1, (11 + 1 + 4) * 441)


def test_config_rejects_inconsistent_sizes():
    with pytest.raises(ValueError, match="multiplies to"):
        tiny_config(vocoder_upsample=[5, 4, 4])
    with pytest.raises(ValueError, match="multiple of 2"):
        tiny_config(n_mels=80, unet_channels=[8, 8, 8, 8, 8])


def test_params_yaml_block_is_valid(project_params):
    params = project_params()
    vf = params.voicefixer
    assert vf.model.sample_rate == params.audio.sample_rate and vf.model.hop == math.prod(vf.model.vocoder_upsample)
    assert vf.finetune.freeze_vocoder
    from gensr.voicefixer import voicefixer_from_params

    model = voicefixer_from_params(vf)
    assert model.config == vf.model and sum(model.parameter_counts().values()) < 5e6  # the demo stays small
    with pytest.raises(ValueError, match="official_vocoder_ckpt is null"):
        voicefixer_from_params(vf.model_copy(update={"official_analysis_ckpt": "vf.ckpt"}))


# --- faithfulness to the official package ------------------------------------------------------------------
def _randomise_batch_norms(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Non-trivial running stats and affine params, so eval-mode batch norms are not identities."""
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
            m.weight.data.copy_(0.5 + torch.rand(n, generator=gen))
            m.bias.data.copy_(0.1 * torch.randn(n, generator=gen))


def _legacy_weight_norm(state: dict) -> dict:
    """parametrizations.weight.original0/1 -> weight_g/weight_v: the layout of files saved with the old API."""
    out = {}
    for k, v in state.items():
        k = k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v")
        out[k] = v
    return out


@pytest.fixture(scope="module")
def official_home(tmp_path_factory):
    """A HOME with placeholder official checkpoints; the official package imported under it, offline."""
    if importlib.util.find_spec("voicefixer") is None or importlib.util.find_spec("torchlibrosa") is None:
        pytest.skip("the official voicefixer 0.1.3 package is not installed (pip install -e '.[dev]')")
    home = tmp_path_factory.mktemp("home")
    (home / VF_REL).parent.mkdir(parents=True)
    (home / VOC_REL).parent.mkdir(parents=True)
    torch.save({}, home / VF_REL)  # base.VoiceFixer filters it by key: empty = nothing to load
    torch.save({"generator": {}}, home / VOC_REL)  # vocoder.base.Vocoder reads checkpoint["generator"]
    real_expanduser = os.path.expanduser

    def expanduser(path):
        path = os.fspath(path)
        return str(home) + path[1:] if path == "~" or path.startswith("~/") else real_expanduser(path)

    def refuse(*args, **kwargs):
        raise RuntimeError("the test must not download the official weights")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.setattr(os.path, "expanduser", expanduser)
        mp.setattr(urllib.request, "urlretrieve", refuse)
        for name in [m for m in sys.modules if m == "voicefixer" or m.startswith("voicefixer.")]:
            mp.delitem(sys.modules, name)  # import (and read Config.ckpt) under this HOME
        yield home


@pytest.mark.slow
def test_official_checkpoints_give_the_official_outputs(official_home, tmp_path):
    """Random official modules -> official file layout -> load_official: same mel out, same waveform out."""
    import voicefixer.restorer.model as vf_model
    from voicefixer.tools.mel_scale import MelScale
    from voicefixer.tools.modules.fDomainHelper import FDomainHelper
    from voicefixer.tools.pytorch_util import from_log as vf_from_log
    from voicefixer.vocoder.base import Vocoder as VfVocoder

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    analysis = vf_model.Generator(128, 1025, 2).eval()  # as voicefixer_fe(channels=2, sample_rate=44100) builds it
    _randomise_batch_norms(analysis, gen)
    vocoder = VfVocoder(sample_rate=44100).eval()  # reads the placeholder; its generator keeps random weights
    f_helper = FDomainHelper(window_size=2048, hop_size=441, center=(True,), pad_mode="reflect", window="hann",
                             freeze_parameters=True)
    mel_scale = MelScale(n_mels=128, sample_rate=44100, n_stft=1025)

    # the official layout: vf.ckpt = the VoiceFixer module's state dict (generator.*, f_helper.*, mel.*);
    # the vocoder file = {"generator": Generator state dict}, here with legacy weight_g/weight_v keys
    vf_ckpt, voc_ckpt = tmp_path / "vf.ckpt", tmp_path / "model.ckpt-1490000_trimed.pt"
    vf_state = {f"generator.{k}": v for k, v in analysis.state_dict().items()}
    vf_state.update({f"f_helper.{k}": v for k, v in f_helper.state_dict().items()})
    vf_state.update({f"mel.{k}": v for k, v in mel_scale.state_dict().items()})
    torch.save(vf_state, vf_ckpt)
    torch.save({"generator": _legacy_weight_norm(vocoder.model.state_dict()), "steps": 1490000}, voc_ckpt)

    ours = load_official(vf_ckpt, voc_ckpt)
    wave = np.random.default_rng(0).normal(0, 0.1, int(0.5 * 44100)).astype(np.float32)
    wave += np.sin(2 * np.pi * 220 * np.arange(len(wave)) / 44100).astype(np.float32) * 0.3
    x = torch.from_numpy(wave)[None]
    with torch.no_grad():
        sp, _, _ = f_helper.wav_to_spectrogram_phase(x[:, None])  # VoiceFixer._pre
        mel_official = mel_scale(sp.permute(0, 1, 3, 2)).permute(0, 1, 3, 2)
        mel_ours = ours.mel(x)
        front_rel = float(((mel_ours - mel_official).abs() / (mel_official.abs() + 1e-3)).max())

        t0 = time.perf_counter()
        out_official = analysis(sp, mel_official)["mel"]
        out_ours = ours.analyse(mel_official)["mel"]
        analysis_diff = float((out_ours - out_official).abs().max())

        denoised = vf_from_log(out_official)
        wave_official = vocoder(denoised)[:, 0]
        wave_ours = ours.synthesise(denoised)
        vocoder_diff = float((wave_ours - wave_official).abs().max())
        seconds = time.perf_counter() - t0

        # end to end, wave in -> wave out, against VoiceFixer.restore_inmem's steps (incl. _trim_center)
        from voicefixer.base import VoiceFixer as VfBase

        from gensr.voicefixer.train import restore

        end_official = VfBase._trim_center(None, wave_official[:, None], wave)[0][0, 0].numpy()
        end_diff = float(np.abs(restore(ours, wave) - end_official).max())

        # the official file read by the official loader gives the same vocoder (legacy keys included)
        reread = VfVocoder(sample_rate=44100)
        reread._load_pretrain(voc_ckpt)
        reread_diff = float((reread(denoised)[:, 0] - wave_official).abs().max())

    print(f"\nfaithfulness (0.5 s, 44.1 kHz): front end max rel diff {front_rel:.2e}; analysis max abs diff "
          f"{analysis_diff:.2e} (log10 mel, range {float(out_official.min()):.2f}..{float(out_official.max()):.2f}); "
          f"vocoder max abs diff {vocoder_diff:.2e} (wave std {float(wave_official.std()):.3f}); "
          f"official vocoder re-read {reread_diff:.2e}; end to end (our front end) {end_diff:.2e}; "
          f"both forwards {seconds:.1f} s")
    assert out_ours.shape == out_official.shape and wave_ours.shape == wave_official.shape
    assert float(out_official.std()) > 1e-2 and float(wave_official.std()) > 1e-3  # not a degenerate comparison
    assert analysis_diff <= 1e-5
    assert vocoder_diff <= 1e-5
    assert reread_diff <= 1e-6
    assert front_rel <= 1e-3  # torch.stft vs torchlibrosa's conv DFT: float32 rounding only
    assert end_diff <= 1e-3


def test_load_official_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="voicefixer.official_vocoder_ckpt"):
        load_official(tmp_path / "vf.ckpt", tmp_path / "absent.pt")
    torch.save({"generator": {}}, tmp_path / "voc.pt")
    with pytest.raises(FileNotFoundError, match="voicefixer.official_analysis_ckpt"):
        load_official(None, tmp_path / "voc.pt")


# --- training, checkpoints, restore ----------------------------------------------------------------------
def test_tiny_model_trains_and_loss_goes_down():
    torch.manual_seed(0)
    model = build_voicefixer(tiny_config())
    pairs = pairs_of(4, 0.6, 16000)
    from gensr.train.data import pad_batch
    from gensr.voicefixer.train import analysis_loss, vocoder_loss

    deg, lengths = pad_batch([p[0] for p in pairs])
    clean, _ = pad_batch([p[1] for p in pairs])
    cfg = tiny_train(steps=30)

    def losses():
        model.train()
        with torch.no_grad():
            torch.manual_seed(5)
            a = float(analysis_loss(model)(deg, clean, lengths))
            v = float(vocoder_loss(model, cfg)(deg, clean, lengths))
        return a, v

    before = losses()
    from gensr.voicefixer.train import train_voicefixer

    summary = train_voicefixer(model, pairs, cfg, seed=3)
    after = losses()
    assert summary["analysis"]["steps"] == 30 and summary["vocoder"]["steps"] == 30
    assert after[0] < before[0] and after[1] < before[1], (before, after)


def test_training_is_seeded_and_freezing_keeps_the_vocoder():
    from gensr.voicefixer.train import train_voicefixer

    pairs = pairs_of(3, 0.5, 16000)
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_voicefixer(tiny_config())
        train_voicefixer(model, pairs, tiny_train(steps=3), seed=7)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    torch.manual_seed(0)
    model = build_voicefixer(tiny_config())
    vocoder_before = {k: v.clone() for k, v in model.vocoder.state_dict().items()}
    analysis_before = {k: v.clone() for k, v in model.generator.state_dict().items()}
    summary = train_voicefixer(model, pairs, tiny_train(steps=3, freeze_vocoder=True), seed=7)
    assert summary["vocoder"] is None
    assert all(torch.equal(vocoder_before[k], v) for k, v in model.vocoder.state_dict().items())
    assert any(not torch.equal(analysis_before[k], v) for k, v in model.generator.state_dict().items())


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    from gensr.voicefixer.train import restore

    torch.manual_seed(0)
    model = build_voicefixer(tiny_config()).eval()
    _randomise_batch_norms(model, torch.Generator().manual_seed(0))
    path = save_voicefixer(model, tmp_path / "vf.pt", extra={"note": "test"})
    again = load_voicefixer(path)
    wave = speech_like(0.7, 16000, 0)
    assert np.array_equal(restore(model, wave), restore(again, wave))
    assert save_voicefixer(again, tmp_path / "vf2.pt", extra={"note": "test"}).read_bytes() == path.read_bytes()
    with pytest.raises(ValueError, match="not a gensr Voicefixer"):
        torch.save({"generator": {}}, tmp_path / "other.pt")
        load_voicefixer(tmp_path / "other.pt")


@pytest.mark.parametrize("trim", ["start", "center"])
def test_restore_batched_keeps_lengths_and_alignment(trim):
    from gensr.voicefixer.train import restore

    torch.manual_seed(0)
    model = build_voicefixer(tiny_config(output_trim=trim)).eval()
    waves = [speech_like(s, 16000, i) for i, s in enumerate((0.5, 0.83, 0.61, 0.2))]
    batched = restore(model, waves, batch_size=3)
    assert [len(w) for w in batched] == [len(w) for w in waves]
    for wave, out in zip(waves, batched):
        alone = restore(model, wave)
        assert alone.shape == wave.shape and alone.dtype == np.float32
        # same offset as alone; the padding only reaches the clip's last frames (GRU + conv receptive fields)
        head = len(wave) // 2
        assert np.abs(out[:head] - alone[:head]).max() < 0.05 * alone.std()


# --- input-phase synthesis ------------------------------------------------------------------------------
def _band_energy(wave: np.ndarray, sr: int, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(wave)) ** 2
    freqs = np.fft.rfftfreq(len(wave), 1 / sr)
    return float(spectrum[(freqs >= low) & (freqs < high)].sum())


def test_input_phase_rendering_keeps_scales_and_adds():
    model = build_voicefixer(tiny_config(synthesis="input_phase")).eval()
    wave = torch.from_numpy(speech_like(0.6, 16000, 1) + np.random.default_rng(2).normal(0, 0.01, 9600)
                            .astype(np.float32))[None]
    mel = model.mel(wave)
    # its own mel gives the input back (gain 1 everywhere; STFT -> iSTFT round trip)
    same = model.frontend.input_phase(wave, mel)
    assert same.shape == wave.shape and torch.allclose(same, wave, atol=1e-4)
    # a mel at a quarter of the level gives the input at a quarter (gain <= 1: the input's bins, scaled)
    assert torch.allclose(model.frontend.input_phase(wave, mel / 4), wave / 4, atol=1e-4)
    # a low-passed input whose restored mel has the top bands back: energy is added there, from the restored mel
    spec = np.fft.rfft(wave[0].numpy())
    spec[np.fft.rfftfreq(wave.shape[-1], 1 / 16000) >= 4000] = 0
    low = torch.from_numpy(np.fft.irfft(spec, n=wave.shape[-1]).astype(np.float32))[None]
    out = model.frontend.input_phase(low, mel)[0].numpy()
    assert _band_energy(out, 16000, 4500, 8000) > 20 * _band_energy(low[0].numpy(), 16000, 4500, 8000)
    assert _band_energy(out, 16000, 4500, 8000) < 2 * _band_energy(wave[0].numpy(), 16000, 4500, 8000)


def test_input_phase_model_restores_aligned_and_trains_no_vocoder():
    from gensr.voicefixer.train import restore, train_voicefixer

    torch.manual_seed(0)
    model = build_voicefixer(tiny_config(synthesis="input_phase"))
    vocoder_before = {k: v.clone() for k, v in model.vocoder.state_dict().items()}
    summary = train_voicefixer(model, pairs_of(3, 0.5, 16000), tiny_train(steps=3), seed=7)
    assert summary["vocoder"] is None  # not frozen, but unused by the synthesis: not trained
    assert all(torch.equal(vocoder_before[k], v) for k, v in model.vocoder.state_dict().items())
    waves = [speech_like(s, 16000, i) for i, s in enumerate((0.5, 0.83, 0.2))]
    batched = restore(model, waves, batch_size=3)
    assert [len(w) for w in batched] == [len(w) for w in waves]
    for wave, out in zip(waves, batched):
        alone = restore(model, wave)
        assert np.corrcoef(alone, wave)[0, 1] > 0.5  # aligned with its input (no vocoder offset)
        head = len(wave) // 2
        assert np.abs(out[:head] - alone[:head]).max() < 0.05 * alone.std()
    with torch.no_grad():  # forward() is the same rendering, cut to the input's length
        single = torch.from_numpy(waves[1])[None]
        assert torch.allclose(model(single)[0], torch.from_numpy(restore(model, waves[1])), atol=1e-5)
