"""Paper-scale backends load offline from checkpoints the test writes in their real formats,
and missing weights fail fast with the param to change."""

from __future__ import annotations

import time

import numpy as np
import pytest

from conftest import PARAMS


def metrics_params(overrides=()):
    from gensr.config import load_params

    return load_params(PARAMS, list(overrides)).metrics


def speechlike(seconds=1.5, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    return (0.3 * envelope * np.sin(2 * np.pi * (120 + 40 * seed) * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


# The default install (make setup) is CPU-only and has no speechbrain: speechbrain imports torchaudio, whose
# compiled files load only beside the CUDA build of torch. `make test STACK=cuda` runs the ECAPA tests.
NO_SPEECHBRAIN = "speechbrain is in the `ecapa` extra, not the CPU-only default install: run `make test STACK=cuda`"


@pytest.fixture(scope="module")
def whisper_checkpoint(tmp_path_factory):
    """A random-init tiny Whisper saved the way openai-whisper's checkpoints are."""
    import torch
    from whisper.model import ModelDimensions, Whisper

    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                           n_vocab=51865, n_text_ctx=16, n_text_state=32, n_text_head=2, n_text_layer=1)
    torch.manual_seed(0)
    model = Whisper(dims)
    path = tmp_path_factory.mktemp("whisper") / "tiny-random.pt"
    torch.save({"dims": dims.__dict__, "model_state_dict": model.state_dict()}, path)
    return path


def test_whisper_backend_transcribes_from_a_local_checkpoint(whisper_checkpoint):
    from gensr.metrics.asr import WordErrorRate
    from gensr.metrics.base import Clip

    params = metrics_params(["metrics.content.backend=whisper", f"metrics.content.whisper_model={whisper_checkpoint}"])
    scorer = WordErrorRate(params.content)
    scorer.setup()
    result = scorer.score_batch([Clip("c", speechlike(), 16000, text="the man found a box")])[0]
    assert np.isfinite(result["wer"].value) and result["wer"].value >= 0  # random weights: garbage, but scored
    assert scorer.infos[0].backend == "whisper" and "model=" in scorer.infos[0].version


def test_whisper_name_fails_fast_offline(monkeypatch, tmp_path):
    from gensr.metrics.asr import MissingWeights, load_whisper_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # an empty download cache
    start = time.perf_counter()
    with pytest.raises(MissingWeights, match="metrics.content.whisper_model"):
        load_whisper_model("tiny")
    assert time.perf_counter() - start < 1.0
    with pytest.raises(MissingWeights, match="metrics.content.whisper_model"):
        load_whisper_model("no-such-model")


ECAPA_YAML = """\
n_mels: 24
pretrained_path: {folder}
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>
mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False
embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: [32, 32, 32, 32, 96]
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: 16
    se_channels: 16
    lin_neurons: 24
classifier: !new:speechbrain.lobes.models.ECAPA_TDNN.Classifier
    input_size: 24
    out_neurons: 4
modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    classifier: !ref <classifier>
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        classifier: !ref <classifier>
    paths:
        embedding_model: !ref <pretrained_path>/embedding_model.ckpt
        classifier: !ref <pretrained_path>/classifier.ckpt
"""


@pytest.fixture(scope="module")
def ecapa_folder(tmp_path_factory):
    """A small random-init ECAPA in the layout of speechbrain/spkrec-ecapa-voxceleb."""
    pytest.importorskip("speechbrain", reason=NO_SPEECHBRAIN)
    import torch
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier

    folder = tmp_path_factory.mktemp("ecapa_source")
    torch.manual_seed(0)
    model = ECAPA_TDNN(24, channels=[32, 32, 32, 32, 96], kernel_sizes=[5, 3, 3, 3, 1], dilations=[1, 2, 3, 4, 1],
                       attention_channels=16, se_channels=16, lin_neurons=24)
    torch.save(model.state_dict(), folder / "embedding_model.ckpt")
    torch.save(Classifier(input_size=24, out_neurons=4).state_dict(), folder / "classifier.ckpt")
    (folder / "hyperparams.yaml").write_text(ECAPA_YAML.format(folder=folder))
    return folder, model


def test_ecapa_backend_loads_a_local_source(ecapa_folder, tmp_path):
    import torch

    from gensr.metrics.base import Clip
    from gensr.metrics.speaker import SpeakerCosine

    folder, trained = ecapa_folder
    params = metrics_params(["metrics.speaker.backend=ecapa", f"metrics.speaker.ecapa_source={folder}",
                             f"metrics.speaker.ecapa_savedir={tmp_path / 'saved'}"])
    scorer = SpeakerCosine(params.speaker)
    scorer.setup()
    loaded = scorer.embedder.model.mods.embedding_model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in trained.state_dict().items())  # the checkpoint's weights
    a, b = speechlike(seed=0), speechlike(seed=3)
    same, other = scorer.score_batch([Clip("s", a, 16000, reference=a, reference_rate=16000, reference_key="a"),
                                      Clip("o", b, 16000, reference=a, reference_rate=16000, reference_key="a")])
    assert same["speaker_cosine"].value == pytest.approx(1.0, abs=1e-5)
    assert -1.0 <= other["speaker_cosine"].value < 0.9999


def test_ecapa_hub_id_fails_fast_offline(monkeypatch, tmp_path):
    from gensr.metrics.asr import MissingWeights
    from gensr.metrics.speaker import load_ecapa

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    params = metrics_params(["metrics.speaker.backend=ecapa", f"metrics.speaker.ecapa_savedir={tmp_path}"]).speaker
    start = time.perf_counter()
    with pytest.raises(MissingWeights, match="metrics.speaker.ecapa_source"):
        load_ecapa(params)
    assert time.perf_counter() - start < 1.0


def test_ecapa_without_speechbrain_names_the_param_and_the_install(tmp_path):
    import importlib.util

    if importlib.util.find_spec("speechbrain") is not None:
        pytest.skip("speechbrain is installed (the STACK=cuda venv)")
    from gensr.metrics.asr import MissingBackend
    from gensr.metrics.speaker import SpeakerCosine

    (tmp_path / "src").mkdir()
    params = metrics_params(["metrics.speaker.backend=ecapa", f"metrics.speaker.ecapa_source={tmp_path / 'src'}",
                             f"metrics.speaker.ecapa_savedir={tmp_path / 'saved'}"]).speaker
    scorer = SpeakerCosine(params)
    assert "speechbrain==(not installed)" in scorer.infos[0].version
    with pytest.raises(MissingBackend, match=r"metrics\.speaker\.backend=ecapa.*STACK=cuda"):
        scorer.setup()


def test_suite_stops_with_the_param_when_weights_are_missing(monkeypatch, tmp_path):
    from gensr.config import load_params
    from gensr.metrics import score_manifest
    from gensr.metrics.asr import MissingWeights

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    wav = tmp_path / "a.wav"
    import soundfile as sf

    sf.write(wav, speechlike(), 16000)
    params = load_params(PARAMS, ["metrics.names=[wer]", "metrics.content.backend=whisper",
                                  "metrics.content.whisper_model=tiny", "metrics.workers=1"])
    with pytest.raises(MissingWeights, match="metrics.content.whisper_model"):
        score_manifest(params, [{"clip_id": "a", "path": str(wav), "text": "a"}], tmp_path / "out.parquet", progress=False)


def test_loading_the_speaker_encoder_prints_no_pkg_resources_warning():
    """resemblyzer imports webrtcvad, which imports setuptools' deprecated pkg_resources: every scoring process
    of a `make demo` printed that warning (36 times). A fresh interpreter loads the encoder with warnings on."""
    import subprocess
    import sys

    code = ("from gensr.metrics.speaker import ResemblyzerEmbedder\n"
            "e = ResemblyzerEmbedder(); e.load(); print('loaded', e.version)")
    out = subprocess.run([sys.executable, "-W", "default::UserWarning", "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert "loaded" in out.stdout
    assert "pkg_resources" not in out.stderr, out.stderr
