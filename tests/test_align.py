"""DPO: the pure loss against hand-computed values, and the Lightning module on real restorers."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from gensr.align.loss import dpo_loss


def test_dpo_loss_matches_a_hand_computed_value():
    pw, pl = torch.tensor([-10.0, -4.0]), torch.tensor([-12.0, -3.0])
    rw, rl = torch.tensor([-11.0, -4.0]), torch.tensor([-11.0, -4.0])
    beta = 0.5
    # pair 0: beta*((-10+11) - (-12+11)) = 0.5*2 = 1.0 ; pair 1: 0.5*((0) - (1)) = -0.5
    expected = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(0.5))) / 2
    loss, diag = dpo_loss(pw, pl, rw, rl, beta)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert diag["rewards/chosen"].item() == pytest.approx((0.5 + 0.0) / 2)
    assert diag["rewards/rejected"].item() == pytest.approx((-0.5 + 0.5) / 2)
    assert diag["rewards/margins"].item() == pytest.approx((1.0 - 0.5) / 2)
    assert diag["rewards/accuracies"].item() == pytest.approx(0.5)


def test_dpo_loss_is_log2_when_policy_equals_reference():
    scores = torch.randn(7) * 100
    other = torch.randn(7) * 100
    loss, diag = dpo_loss(scores, other, scores.clone(), other.clone(), beta=3.0)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert diag["rewards/accuracies"].item() == 0.0  # a zero margin is not a win


def test_sft_term_adds_weighted_nll_and_is_required_when_weighted():
    z = torch.zeros(3)
    loss, _ = dpo_loss(z, z, z, z, beta=1.0, sft_weight=0.25, policy_chosen_nll=torch.tensor(2.0))
    assert loss.item() == pytest.approx(math.log(2) + 0.5, abs=1e-6)
    with pytest.raises(ValueError, match="policy_chosen_nll"):
        dpo_loss(z, z, z, z, beta=1.0, sft_weight=0.1)


def test_loss_gradient_reaches_policy_scores_only():
    pw = torch.randn(4, requires_grad=True)
    pl = torch.randn(4, requires_grad=True)
    rw = torch.randn(4, requires_grad=True)
    rl = torch.randn(4, requires_grad=True)
    loss, _ = dpo_loss(pw, pl, rw, rl, beta=0.3)
    loss.backward()
    assert pw.grad is not None and pl.grad is not None
    assert (pw.grad < 0).all() and (pl.grad > 0).all()  # raise chosen, lower rejected
    assert rw.grad is None and rl.grad is None


# --- the Lightning module on the real restorers (tiny dims) --------------------------------------

STFT = {"n_fft": 128, "hop": 64, "log_floor": 1e-4}


def tiny_restorer(paradigm: str):
    """A real restorer of each paradigm with tiny dims (random init; the codec gets random codebooks)."""
    torch.manual_seed(0)
    if paradigm == "fm":
        from gensr.models.fm import FMRestorer

        return FMRestorer.build(STFT, {"noise_scale": 0.5, "score_draws": 1, "hidden": 16, "layers": 2, "kernel": 3,
                                       "time_dim": 8}, {"noise_factor": 1.0, "ode_steps": 2})
    from gensr.models.codec import SpectralCodec
    from gensr.models.registry import restorer_class

    codec = SpectralCodec({"stft": STFT, "model": {"n_codebooks": 2, "codebook_size": 8, "hidden": 16, "layers": 1,
                                                   "kernel": 3, "latent_dim": 4}})
    codec.codebooks.copy_(torch.randn_like(codec.codebooks))
    model = {"d_model": 16, "heads": 2, "layers": 1, "cond_layers": 1, "cond_kernel": 3}
    sampling = {"temperature": 1.0, "top_k": 4, "steps": 2, "confidence_noise": 1.0}
    return restorer_class(paradigm).from_codec(codec, model, sampling)


def _pair_batch(b=3, t=1600):
    g = torch.Generator().manual_seed(1)
    return {"degraded": torch.randn(b, t, generator=g) * 0.1, "chosen": torch.randn(b, t, generator=g) * 0.1,
            "rejected": torch.randn(b, t, generator=g) * 0.1, "seed": torch.arange(b, dtype=torch.int64) + 11}


@pytest.mark.parametrize("paradigm", ["ar", "mgm", "fm"])
def test_gradients_flow_into_the_policy_only_and_loss_starts_at_log2(paradigm):
    import copy

    from gensr.align.data import stacked_scores
    from gensr.align.module import DPOModule

    policy = tiny_restorer(paradigm)
    reference = copy.deepcopy(policy)
    mode = "live" if paradigm == "fm" else "cached"
    module = DPOModule(policy, reference, paradigm=paradigm, beta=0.5, lr=1e-3, weight_decay=0.0, sft_weight=0.0,
                       reference_mode=mode)
    batch = _pair_batch()
    if mode == "cached":
        with torch.no_grad():
            batch["ref_chosen"], batch["ref_rejected"] = stacked_scores(reference, batch["degraded"], batch["chosen"],
                                                                         batch["rejected"], batch["seed"])
    policy.eval()
    loss, diag = module._step(batch, batch["seed"])
    assert loss.item() == pytest.approx(math.log(2), abs=1e-4)
    loss.backward()
    trainable = [p for p in policy.parameters() if p.requires_grad]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)
    assert all(p.grad is None for p in reference.parameters())
    assert not any(k.startswith("_reference") or "reference" in k for k in module.state_dict())
    assert "policy" not in module.hparams and "reference" not in module.hparams


@pytest.mark.parametrize("paradigm,prefix", [("ar", "heads"), ("mgm", "heads"), ("fm", "velocity.out")])
def test_trainable_prefixes_leave_every_other_parameter_untouched(paradigm, prefix):
    import copy

    from gensr.align.data import stacked_scores
    from gensr.align.module import DPOModule

    policy = tiny_restorer(paradigm)
    reference = copy.deepcopy(policy)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    mode = "live" if paradigm == "fm" else "cached"
    module = DPOModule(policy, reference, paradigm=paradigm, beta=0.5, lr=1e-2, weight_decay=0.0, sft_weight=1.0,
                       reference_mode=mode, trainable=(prefix,))
    batch = _pair_batch()
    if mode == "cached":
        with torch.no_grad():
            batch["ref_chosen"], batch["ref_rejected"] = stacked_scores(reference, batch["degraded"], batch["chosen"],
                                                                         batch["rejected"], batch["seed"])
    optimizer = module.configure_optimizers()
    policy.eval()
    loss, _ = module._step(batch, batch["seed"])
    loss.backward()
    optimizer.step()
    moved = {n for n, p in policy.named_parameters() if not torch.equal(p, before[n])}
    assert moved and all(n.startswith(prefix + ".") for n in moved)
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {
        id(p) for n, p in policy.named_parameters() if n.startswith(prefix + ".")}


def test_trainable_prefix_that_matches_nothing_is_refused_with_the_module_names():
    import copy

    from gensr.align.module import DPOModule

    policy = tiny_restorer("ar")
    for prefix in ("head", "codec"):  # a typo, and the codec the restorer keeps frozen
        with pytest.raises(ValueError, match=rf"trainable: \['{prefix}'\] match no trainable parameter.*'heads'"):
            DPOModule(policy, copy.deepcopy(policy), paradigm="ar", beta=0.1, lr=1e-3, weight_decay=0.0,
                      sft_weight=0.0, reference_mode="cached", trainable=(prefix,))
    assert not any(p.requires_grad for p in policy.codec.parameters())


def test_sft_term_fits_the_chosen_or_the_clean_reference():
    import copy

    from gensr.align.module import DPOModule

    policy = tiny_restorer("ar")
    batch = _pair_batch()
    batch["clean"] = batch["chosen"] * 0.5
    with torch.no_grad():
        on_clean = policy.sft_loss(batch["degraded"], batch["clean"])
        on_chosen = policy.sft_loss(batch["degraded"], batch["chosen"])
    assert not torch.isclose(on_clean, on_chosen)
    losses = {}
    for target in ("chosen", "clean"):
        module = DPOModule(policy, copy.deepcopy(policy), paradigm="ar", beta=0.5, lr=1e-3, weight_decay=0.0,
                           sft_weight=2.0, reference_mode="live", sft_target=target)
        with torch.no_grad():
            losses[target] = module._step(batch, batch["seed"])[0]
    # policy == reference: the DPO part is log 2, the rest is the weighted SFT term on the chosen target
    assert losses["chosen"].item() == pytest.approx(math.log(2) + 2.0 * on_chosen.item(), rel=1e-5)
    assert losses["clean"].item() == pytest.approx(math.log(2) + 2.0 * on_clean.item(), rel=1e-5)
    with pytest.raises(RuntimeError, match="clean"):
        DPOModule(policy, copy.deepcopy(policy), paradigm="ar", beta=0.5, lr=1e-3, weight_decay=0.0, sft_weight=1.0,
                  reference_mode="live", sft_target="clean")._step({k: v for k, v in batch.items() if k != "clean"},
                                                                   batch["seed"])
    with pytest.raises(ValueError, match="sft_target"):
        DPOModule(policy, policy, paradigm="ar", beta=0.5, lr=1e-3, weight_decay=0.0, sft_weight=1.0,
                  reference_mode="live", sft_target="degraded")


def _write_pairs(tmp_path, n_pairs=6, sr=16000, seconds=0.25, codebooks=0):
    """Pair audio (+ with `codebooks`, per-candidate token files: chosen [f, k] = (100 f + k) mod 8, rejected shifted
    by 1 + i mod 7, so that the two sides of a pair score differently)."""
    from gensr.audio.io import write_wav
    from gensr.models.features import n_frames

    rng = np.random.default_rng(0)
    rows = []
    t = np.arange(int(sr * seconds)) / sr
    for i in range(n_pairs):
        clean = 0.3 * np.sin(2 * np.pi * (200 + 30 * i) * t)
        for kind, wave in (("clean", clean), ("degraded", clean + 0.2 * rng.standard_normal(len(t))),
                           ("chosen", clean + 0.02 * rng.standard_normal(len(t))),
                           ("rejected", clean + 0.1 * rng.standard_normal(len(t)))):
            write_wav(tmp_path / "wav" / f"{kind}{i}.wav", wave.astype(np.float32), sr)
        rows.append({"pair_id": f"p{i}", "deg_id": f"d{i}", "role": "heldout" if i >= n_pairs - 2 else "train",
                     "degraded_path": f"wav/degraded{i}.wav", "chosen_path": f"wav/chosen{i}.wav",
                     "rejected_path": f"wav/rejected{i}.wav", "clean_path": f"wav/clean{i}.wav", "seed": 100 + i})
        if codebooks:
            f = n_frames(len(t), STFT["hop"])
            for kind in ("chosen", "rejected"):
                shift = 0 if kind == "chosen" else 1 + i % 7  # never a multiple of 8: the sides always differ
                codes = (100 * np.arange(f)[:, None] + np.arange(codebooks)[None, :] + shift) % 8
                (tmp_path / "codes").mkdir(exist_ok=True)
                np.save(tmp_path / "codes" / f"{kind}{i}.npy", codes.astype(np.int32))
                rows[-1][f"{kind}_codes_path"] = f"codes/{kind}{i}.npy"
    pairs = pd.DataFrame(rows)
    pairs.to_parquet(tmp_path / "pairs.parquet")
    return pairs


def test_pair_tensors_crop_the_sampled_tokens_with_the_audio(tmp_path):
    """The crop offset is a multiple of the hop and the tokens are cut at offset / hop; frames past
    a short clip hold -1 (filled from the codec encoding by the model)."""
    from gensr.align.data import PairTensors
    from gensr.audio.io import read_wav
    from gensr.models.features import n_frames

    hop = STFT["hop"]
    pairs = _write_pairs(tmp_path, n_pairs=4, seconds=0.3, codebooks=2)
    long = PairTensors(pairs, tmp_path, 16000, 0.2, hop)
    frames = n_frames(int(0.2 * 16000), hop)
    assert long.chosen_codes.shape == (4, frames, 2) and long.rejected_codes.shape == (4, frames, 2)
    offsets = set()
    for i, row in pairs.iterrows():
        full, _ = read_wav(tmp_path / row["chosen_path"])
        seg = long.chosen[i].numpy()
        start = next(o for o in range(len(full) - len(seg) + 1) if np.array_equal(full[o : o + len(seg)], seg))
        assert start % hop == 0
        offsets.add(start)
        expected = np.load(tmp_path / row["chosen_codes_path"])[start // hop : start // hop + frames]
        assert np.array_equal(long.chosen_codes[i, : len(expected)].numpy(), expected)
    assert len(offsets) > 1  # seeded per pair, not always 0
    short = PairTensors(pairs, tmp_path, 16000, 0.5, hop)  # longer than the clips: zero-padded
    clip_frames = n_frames(int(0.3 * 16000), hop)
    assert (short.chosen_codes[:, clip_frames:] == -1).all() and (short.chosen_codes[:, :clip_frames] >= 0).all()
    with_clean = PairTensors(pairs, tmp_path, 16000, 0.2, hop, with_clean=True)  # dpo.<p>.sft_target: clean
    assert long.clean is None and with_clean.clean.shape == with_clean.chosen.shape
    for i, row in pairs.iterrows():
        full, _ = read_wav(tmp_path / row["degraded_path"])
        seg = with_clean.degraded[i].numpy()
        start = next(o for o in range(len(full) - len(seg) + 1) if np.array_equal(full[o : o + len(seg)], seg))
        assert np.array_equal(with_clean.clean[i].numpy(), read_wav(tmp_path / row["clean_path"])[0][start : start + len(seg)])
    assert torch.equal(with_clean[1]["clean"], with_clean.clean[1])
    with pytest.raises(ValueError, match="hop"):
        PairTensors(pairs, tmp_path, 16000, 0.2)
    wrong = pairs.copy()
    np.save(tmp_path / "codes" / "chosen0.npy", np.zeros((3, 2), np.int32))
    with pytest.raises(ValueError, match="chosen0.npy"):
        PairTensors(wrong, tmp_path, 16000, 0.2, hop)


def test_longest_pair_segment_crops_no_clip(tmp_path):
    """dpo.segment_seconds: null sizes the segment to the longest pair, so every clip is kept whole (offset 0)."""
    from gensr.align.data import PairTensors, longest_pair_seconds
    from gensr.audio.io import read_wav, write_wav

    pairs = _write_pairs(tmp_path, n_pairs=3, seconds=0.25)
    long_wave = 0.1 * np.ones(int(0.4 * 16000), np.float32)  # pair 1 becomes 0.4 s; its clean file stays 0.25 s
    for kind in ("degraded", "chosen", "rejected"):
        write_wav(tmp_path / "wav" / f"{kind}1.wav", long_wave, 16000)
    write_wav(tmp_path / "wav" / "chosen2.wav", long_wave, 16000)  # one longer file: the pair is as long as its shortest
    assert longest_pair_seconds(pairs, tmp_path, 16000) == pytest.approx(0.4)
    data = PairTensors(pairs, tmp_path, 16000, longest_pair_seconds(pairs, tmp_path, 16000))
    for i, row in pairs.iterrows():
        full = read_wav(tmp_path / row["degraded_path"])[0]
        kept = 0.4 if i == 1 else 0.25
        n = int(kept * 16000)
        assert np.array_equal(data.degraded[i, :n].numpy(), full[:n]) and not data.degraded[i, n:].any()
    write_wav(tmp_path / "wav" / "rejected0.wav", long_wave, 8000)
    with pytest.raises(ValueError, match="rejected0.wav"):
        longest_pair_seconds(pairs, tmp_path, 16000)


@pytest.mark.slow
@pytest.mark.parametrize("paradigm", ["ar", "mgm", "fm"])
def test_dpo_run_end_to_end_writes_a_checkpoint_without_the_reference(tmp_path, paradigm):

    from gensr.align.train import DPOSettings, run_dpo
    from gensr.models import Restorer

    pairs = _write_pairs(tmp_path, codebooks=0 if paradigm == "fm" else 2)  # AR/MGM: scored on their tokens
    base = tiny_restorer(paradigm)
    if paradigm == "ar":  # AR scores at its sampling temperature (dpo.ar.score_temperature: sampling)
        base.sampling["temperature"] = 0.7
    base_path = base.save(tmp_path / "base.pt")
    settings = DPOSettings(paradigm=paradigm, beta=0.5 if paradigm != "fm" else 500.0, lr=1e-3, steps=4, batch_size=2,
                           sft_weight=0.1, sft_target="clean" if paradigm == "mgm" else "chosen",  # clean: train and held-out load it
                           score_draws=1, weight_decay=0.0, grad_clip=1.0, val_every_steps=2, ref_batch_size=4,
                           segment_seconds=None if paradigm == "fm" else 0.2,  # FM: whole clips (null)
                           audio_examples=1, sample_rate=16000, seed=3,
                           score_temperature="sampling" if paradigm == "ar" else "model",
                           trainable=("heads",) if paradigm == "mgm" else None)  # MGM: DPO on its output heads only
    policy, reference = Restorer.load(base_path), Restorer.load(base_path)
    summary = run_dpo(policy, reference, pairs, tmp_path / "pairs.parquet", base_path, settings, tmp_path / "out")
    sizes = {n: p.numel() for n, p in base.named_parameters() if p.requires_grad}  # the codec stays frozen anyway
    expected = sum(v for n, v in sizes.items() if n.startswith("heads.")) if paradigm == "mgm" else sum(sizes.values())
    assert summary["trainable_params"] == expected
    assert summary["n_train_pairs"] == 4 and summary["n_heldout_pairs"] == 2
    assert summary["segment_seconds"] == pytest.approx(0.25 if paradigm == "fm" else 0.2)
    assert summary["heldout_before"]["rewards/accuracies"] == 0.0  # policy == reference: zero margins
    assert set(summary["heldout_after"]) >= {"rewards/accuracies", "rewards/margins", "loss"}
    ckpt = torch.load(tmp_path / "out" / "dpo.ckpt", weights_only=True)  # plain tensors and containers only
    assert ckpt["state_dict"] and all(k.startswith("policy.") for k in ckpt["state_dict"])
    assert "policy" not in ckpt["hyper_parameters"] and "reference" not in ckpt["hyper_parameters"]
    aligned = Restorer.load(tmp_path / "out" / "restorer.pt")
    changed = any(not torch.equal(a, b) for a, b in zip(aligned.state_dict().values(), base.state_dict().values()))
    assert changed, "DPO must move the policy"
    if paradigm == "mgm":
        before = dict(base.named_parameters())
        moved = {n for n, p in aligned.named_parameters() if not torch.equal(p, before[n])}
        assert moved and all(n.startswith("heads.") for n in moved)
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), base.state_dict().values())), \
        "the reference must stay frozen"
    if paradigm != "fm":
        assert (tmp_path / "out" / "reference_scores_train.parquet").exists()
        key = json.loads((tmp_path / "out" / "reference_scores_train.key.json").read_text())
        assert key["score_temperature"] == pytest.approx(0.7 if paradigm == "ar" else 1.0)  # the cache knows it
        assert policy.score_temperature == reference.score_temperature == key["score_temperature"]


def test_dagster_alignment_assets_are_partitioned_and_wired():
    from gensr_dagster.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert {"preference_pairs", "aligned_checkpoints", "evaluation"} <= keys
    import dagster as dg

    parents = {name: {p.to_user_string() for p in graph.get(dg.AssetKey(name)).parent_keys}
               for name in ("preference_pairs", "aligned_checkpoints", "evaluation")}
    assert "metric_tables" in parents["preference_pairs"]
    assert {"preference_pairs", "base_checkpoints"} <= parents["aligned_checkpoints"]
    assert "aligned_checkpoints" in parents["evaluation"]
    for name in ("preference_pairs", "aligned_checkpoints", "evaluation"):
        assert graph.get(dg.AssetKey(name)).partitions_def.get_partition_keys() == ["ar", "mgm", "fm"]
    checks = {c.name: c for c in graph.asset_check_keys}
    assert {"pairs_chosen_dominates", "aligned_not_significantly_worse"} <= set(checks)


def tiny_dpo_project(tmp_path, project_params, steps: int):
    """Params of a tiny FM DPO run of `steps` steps under tmp_path, with its 'multi' pair table written
    (the base checkpoint is the caller's)."""
    from gensr.stages.pairs import pairs_dir

    params = project_params([f"paths.data={tmp_path / 'data'}", f"paths.models={tmp_path / 'models'}",
                             f"paths.mlruns={tmp_path / 'mlruns'}", f"dpo.fm.steps={steps}", "dpo.fm.batch_size=2",
                             "dpo.segment_seconds=0.2", "dpo.val_every_steps=2", "dpo.audio_examples=1"])
    pdir = pairs_dir(params, "fm", "multi")
    pdir.mkdir(parents=True)
    _write_pairs(pdir)
    return params


@pytest.mark.slow
def test_train_dpo_stage_logs_one_mlflow_run_with_diagnostics_and_audio(tmp_path, project_params):
    from gensr.layout import base_checkpoint
    from gensr.stages.dpo import aligned_dir, train_dpo
    from gensr.tracking import configure

    params = tiny_dpo_project(tmp_path, project_params, steps=3)
    tiny_restorer("fm").save(base_checkpoint(params, "fm"))
    summary = train_dpo(params, "fm", "multi")
    assert (aligned_dir(params, "fm", "multi") / "restorer.pt").is_file()
    mlflow = configure(tmp_path / "mlruns")
    run = mlflow.get_run(summary["mlflow_run_id"])
    assert run.data.params["strategy"] == "multi" and run.data.params["pairs_sha256"]
    assert run.data.tags["gensr.base_checkpoint"].endswith("restorer.pt")
    assert {"train/loss", "train/rewards/accuracies", "val/rewards/accuracies",
            "heldout/rewards/accuracies"} <= set(run.data.metrics)
    artifacts = [a.path for a in mlflow.tracking.MlflowClient().list_artifacts(run.info.run_id, "audio")]
    assert artifacts, "before/after audio examples must be logged"


# --- the frozen trunk, run once per pair when only the heads train ------------------------------

def test_ar_scores_from_head_inputs_equal_the_full_path():
    """preference_from_heads / sft_from_heads on head_inputs are the full preference_score / sft_loss, bit for bit."""
    model = tiny_restorer("ar")
    model.score_temperature = 0.7
    batch = _pair_batch()
    inputs = model.head_inputs(batch["degraded"], batch["chosen"])
    assert torch.equal(model.preference_from_heads(inputs), model.preference_score(batch["degraded"], batch["chosen"]))
    assert torch.equal(model.sft_from_heads(inputs), model.sft_loss(batch["degraded"], batch["chosen"]))


def _heads_settings(**overrides):
    from gensr.align.train import DPOSettings

    kwargs = dict(paradigm="ar", beta=0.5, lr=3e-3, steps=6, batch_size=2, sft_weight=1.0, sft_target="clean",
                  score_draws=None, weight_decay=0.0, grad_clip=1.0, val_every_steps=3, ref_batch_size=3,
                  segment_seconds=0.2, audio_examples=0, sample_rate=16000, seed=3, score_temperature="sampling",
                  trainable=("heads",))
    kwargs.update(overrides)
    return DPOSettings(**kwargs)


@pytest.mark.parametrize("objective,target", [("dpo", "clean"), ("dpo", "chosen"), ("sft", "clean"), ("sft", "chosen")])
def test_heads_only_fit_runs_the_trunk_once_and_trains_as_the_full_path(tmp_path, monkeypatch, objective, target):
    """With `trainable: [heads]` the trunk runs once per pair and kind before the fit, never inside it, and the fit ends
    at the weights (and held-out diagnostics) of the path that runs the whole model every step."""
    import gensr.align.train as train_mod
    from gensr.models import Restorer

    pairs = _write_pairs(tmp_path, n_pairs=7, codebooks=2)
    base_path = tiny_restorer("ar").save(tmp_path / "base.pt")
    settings = _heads_settings(objective=objective, sft_target=target)

    def run(out, **patches):
        policy, reference = Restorer.load(base_path), Restorer.load(base_path)
        calls = {"trunk": 0}
        head_inputs = policy.head_inputs

        def counted(*args, **kwargs):
            calls["trunk"] += 1
            return head_inputs(*args, **kwargs)

        monkeypatch.setattr(policy, "head_inputs", counted)
        for name, value in patches.items():
            monkeypatch.setattr(train_mod, name, value)
        summary = train_mod.run_dpo(policy, reference, pairs, tmp_path / "pairs.parquet", base_path, settings,
                                    tmp_path / out)
        monkeypatch.undo()
        return summary, Restorer.load(tmp_path / out / "restorer.pt"), calls["trunk"]

    once, once_model, once_calls = run("once")
    every, every_model, every_calls = run("every", trains_heads_only=lambda *a: False)
    assert once["trunk_once"] and not every["trunk_once"]
    kinds = 1 + (objective == "dpo") + (objective == "dpo" and target == "clean")  # the SFT term on chosen reuses them
    batches = -(-5 // settings.ref_batch_size) + 1  # 5 train pairs in batches of 3, 2 held-out pairs in one
    assert once_calls == kinds * batches  # before the fit only
    assert every_calls > settings.steps  # the full path runs the trunk every step
    base = Restorer.load(base_path)
    moved = False
    for (name, a), b, c in zip(once_model.state_dict().items(), every_model.state_dict().values(),
                               base.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
        if not name.startswith("heads."):
            assert torch.equal(a, c), name
        moved |= not torch.equal(a, c)
    assert moved
    for key in once["heldout_after"]:
        assert once["heldout_after"][key] == pytest.approx(every["heldout_after"][key], rel=1e-4, abs=1e-5)
    if objective == "dpo":  # the pairs' sides differ, so the DPO term did move the held-out margins
        assert once["heldout_after"]["rewards/margins"] != 0


def test_the_trunk_runs_every_step_when_anything_before_the_heads_trains(tmp_path):
    from gensr.align.train import trains_heads_only

    policy, reference = tiny_restorer("ar"), tiny_restorer("ar")
    assert trains_heads_only(policy, reference, _heads_settings())
    assert trains_heads_only(policy, reference, _heads_settings(trainable=("heads", "depth_embed.0")))
    assert not trains_heads_only(policy, reference, _heads_settings(trainable=None))
    assert not trains_heads_only(policy, reference, _heads_settings(trainable=("heads", "transformer")))
    with torch.no_grad():
        next(reference.transformer.parameters()).add_(1e-3)
    assert not trains_heads_only(policy, reference, _heads_settings())  # scores would come from another trunk
    assert trains_heads_only(policy, None, _heads_settings(objective="sft"))
    for paradigm in ("mgm", "fm"):  # no frozen trunk declared: the full path
        assert not trains_heads_only(tiny_restorer(paradigm), tiny_restorer(paradigm),
                                     _heads_settings(paradigm=paradigm))
