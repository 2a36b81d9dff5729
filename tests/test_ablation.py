"""The ablation: SFT-only controls that never compute a preference score, a tiny ablation read back through
MLflow (one parent, nested children, the same metric keys), the confirmation set's isolation, and dvc.yaml's
evaluate params against what the stage reads."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch
import yaml

from test_align import _write_pairs, tiny_restorer
from test_models import tiny_params, write_degraded_corpus

ROOT = Path(__file__).resolve().parents[1]


def _forbid_preference_scores(monkeypatch, *models):
    def boom(*args, **kwargs):
        raise AssertionError("the SFT-only control called preference_score")

    for model in models:
        monkeypatch.setattr(model, "preference_score", boom)
        monkeypatch.setattr(model, "preference_from_heads", boom)  # the heads-only path (dpo.ar.trainable: [heads])


@pytest.mark.parametrize("trainable", [None, ("heads",)])  # ("heads",): the trunk runs once per pair (dpo.ar's own)
@pytest.mark.parametrize("target", ["clean", "chosen"])
def test_sft_controls_never_compute_a_preference_score(tmp_path, monkeypatch, target, trainable):
    """sft_clean / sft_chosen: the same loop as DPO, the SFT term alone. Any call of the DPO scoring path fails."""
    from gensr.align.train import DPOSettings, run_dpo
    from gensr.models import Restorer

    pairs = _write_pairs(tmp_path, codebooks=2)
    base_path = tiny_restorer("ar").save(tmp_path / "base.pt")
    policy, reference = Restorer.load(base_path), Restorer.load(base_path)
    _forbid_preference_scores(monkeypatch, policy, reference)
    settings = DPOSettings(paradigm="ar", beta=0.5, lr=1e-3, steps=3, batch_size=2, sft_weight=1.0, sft_target=target,
                           score_draws=None, weight_decay=0.0, grad_clip=1.0, val_every_steps=2, ref_batch_size=4,
                           segment_seconds=0.2, audio_examples=0, sample_rate=16000, seed=3, objective="sft",
                           trainable=trainable)
    summary = run_dpo(policy, reference, pairs, tmp_path / "pairs.parquet", base_path, settings, tmp_path / "out")
    assert summary["objective"] == "sft" and summary["heldout_before"] == summary["heldout_after"] == {}
    assert not list((tmp_path / "out").glob("reference_scores*"))
    aligned = Restorer.load(tmp_path / "out" / "restorer.pt")
    base = Restorer.load(base_path)
    assert any(not torch.equal(a, b) for a, b in zip(aligned.state_dict().values(), base.state_dict().values()))


@pytest.mark.parametrize("trainable", [None, ("heads",)])
def test_the_dpo_objective_does_use_the_scoring_path(tmp_path, monkeypatch, trainable):
    """The guard above can fail: with objective 'dpo' the same setup calls preference_score."""
    from gensr.align.train import DPOSettings, run_dpo
    from gensr.models import Restorer

    pairs = _write_pairs(tmp_path, codebooks=2)
    base_path = tiny_restorer("ar").save(tmp_path / "base.pt")
    policy, reference = Restorer.load(base_path), Restorer.load(base_path)
    _forbid_preference_scores(monkeypatch, policy, reference)
    settings = DPOSettings(paradigm="ar", beta=0.5, lr=1e-3, steps=2, batch_size=2, sft_weight=1.0, sft_target="clean",
                           score_draws=None, weight_decay=0.0, grad_clip=1.0, val_every_steps=2, ref_batch_size=4,
                           segment_seconds=0.2, audio_examples=0, sample_rate=16000, seed=3, trainable=trainable)
    with pytest.raises(AssertionError, match="preference_score"):
        run_dpo(policy, reference, pairs, tmp_path / "pairs.parquet", base_path, settings, tmp_path / "out")


def test_strategy_settings_share_the_budget_and_differ_only_in_objective_and_target(project_params):
    from gensr.stages.ablation import strategy_settings

    params = project_params()
    got = {s: strategy_settings(params, "ar", s) for s in ("multi", "sft_clean", "sft_chosen", "single:pesq_wb")}
    b = params.ablation.budget
    for s in got.values():
        assert (s.beta, s.lr, s.steps, s.batch_size, s.sft_weight) == (b.beta, b.lr, b.steps, b.batch_size, b.sft_weight)
    assert got["multi"].objective == "dpo" and got["sft_clean"].objective == got["sft_chosen"].objective == "sft"
    assert got["sft_clean"].sft_target == "clean" and got["sft_chosen"].sft_target == "chosen"
    differing = {k for k in got["multi"].__dict__ if got["multi"].__dict__[k] != got["sft_clean"].__dict__[k]}
    assert differing <= {"objective", "sft_target"}


@pytest.fixture()
def ablation_project(tmp_path):
    """A tiny degraded corpus with a test split, a random FM base, and one multi pair set."""
    from gensr.layout import base_checkpoint
    from gensr.stages.pairs import pairs_dir

    params = tiny_params([f"paths.data={tmp_path / 'data'}", f"paths.models={tmp_path / 'models'}",
                          f"paths.reports={tmp_path / 'reports'}", f"paths.mlruns={tmp_path / 'mlruns'}",
                          "ablation.paradigms=[fm]", "ablation.strategies=[multi,sft_clean]", "ablation.splits=[test]",
                          "ablation.budget.steps=2", "ablation.budget.batch_size=2", "dpo.segment_seconds=0.2",
                          "dpo.val_every_steps=2", "dpo.audio_examples=0", "evaluate.samples_per_clip=1",
                          "evaluate.n_bootstrap=200", "restorers.restore_batch=4", "metrics.workers=1",
                          "metrics.names=[pesq_wb,estoi,si_sdr,mel_distance,speaker_cosine]"])
    write_degraded_corpus(tmp_path / "data", 4, lambda i: 0.6, lambda i: "test", text=lambda i: "the man")
    tiny_restorer("fm").save(base_checkpoint(params, "fm"))
    pdir = pairs_dir(params, "fm", "multi")
    pdir.mkdir(parents=True)
    _write_pairs(pdir)
    return params


@pytest.mark.slow
def test_tiny_ablation_is_one_parent_with_nested_children_sharing_metric_keys(ablation_project):
    from gensr.stages.ablation import run_strategy, summarize_ablation
    from gensr.stages.evaluate import evaluate_base
    from gensr.tracking import configure

    params = ablation_project
    evaluate_base(params, "fm", ["test"])
    runs = {s: run_strategy(params, "fm", s) for s in params.ablation.strategies}
    run_strategy(params, "fm", "sft_clean")  # a rerun replaces its child, it does not add one
    summary = summarize_ablation(params)

    client = configure(params.paths.mlruns).tracking.MlflowClient()
    exp = client.get_experiment_by_name("gensr-ablation")
    live = client.search_runs([exp.experiment_id])
    parents = [r for r in live if r.data.tags.get("gensr.ablation_role") == "parent"]
    children = [r for r in live if r.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1 and summary["mlflow_run_id"] == parents[0].info.run_id
    assert len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert {c.data.tags["gensr.strategy"] for c in children} == {"multi", "sft_clean"}
    keys = [{k for k in c.data.metrics if k.startswith("test/")} for c in children]
    assert keys[0] == keys[1] and "test/pesq_wb/diff" in keys[0] and "test/dim/fidelity/p_value" in keys[0]
    assert "train/loss" in {k for c in children for k in c.data.metrics}
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"ablation.md", "ablation.csv", "ablation.png"} <= artifacts
    assert runs["sft_clean"]["objective"] == "sft"
    md = (Path(params.paths.reports) / "ablation.md").read_text()
    assert "multi vs sft_clean" in md and "| sft_clean |" in md


# --- the confirmation set -------------------------------------------------------------------------------
@pytest.mark.slow
def test_confirm_set_is_disjoint_from_the_corpus_in_utterances_and_sentences(tmp_path, project_params):
    import pyarrow.parquet as pq

    from gensr.stages.confirm import build_confirm_set
    from gensr.stages.corpus import build_clean_corpus

    params = project_params([f"paths.data={tmp_path / 'data'}", "corpus.n_utterances=40", "confirm.n_utterances=16",
                             "degrade.workers=1"])
    build_clean_corpus(params)
    summary = build_confirm_set(params)
    main = pq.read_table(tmp_path / "data/clean/manifest.parquet").to_pandas()
    confirm = pq.read_table(tmp_path / "data/confirm/clean/manifest.parquet").to_pandas()
    degraded = pq.read_table(tmp_path / "data/confirm/degraded/manifest.parquet").to_pandas()
    assert len(confirm) == 16 and set(confirm["split"]) == {"confirm"} and summary["shared_texts_with_main"] == 0
    assert not set(confirm["utt_id"]) & set(main["utt_id"]) and not set(confirm["text"]) & set(main["text"])
    assert len(degraded) == 16 and set(degraded["split"]) == {"confirm"}
    assert set(degraded["seed"]) == {params.confirm.seed}


def test_confirm_seed_must_differ_from_the_corpus_seed(tmp_path, project_params):
    from gensr.stages.confirm import build_confirm_set

    with pytest.raises(ValueError, match="confirm.seed"):
        build_confirm_set(project_params([f"paths.data={tmp_path}", "confirm.seed=1234", "seed=1234"]))


def test_no_stage_but_evaluation_reads_the_confirm_set():
    """The confirm set is reached only through `layout.confirm_*` and the 'confirm' split; only the modules
    that build it, restore it for evaluation, or evaluate and report may name them."""
    allowed = {"src/gensr/layout.py", "src/gensr/stages/confirm.py", "src/gensr/sampling/restore.py",
               "src/gensr/stages/evaluate.py", "src/gensr/stages/ablation.py", "src/gensr/corpus/splits.py",
               "src/gensr/cli/align.py", "src/gensr/cli/corpus.py", "src/gensr/config/__init__.py",
               "src/gensr/config/confirm.py", "src/gensr/config/ablation.py",
               "src/gensr/stages/sample.py",  # sample names it only to refuse it (tested below)
               "gensr_dagster/dvc_metadata.py"}  # reads data/confirm/summary.json (counts) for Dagster metadata
    pattern = re.compile(r"confirm_dir|confirm_degraded_manifest|CONFIRM|[\"']confirm[\"']")
    offenders = []
    for path in sorted((ROOT / "src" / "gensr").rglob("*.py")) + sorted((ROOT / "gensr_dagster").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
        if pattern.search(code) and rel not in allowed:
            offenders.append(rel)
    assert not offenders, f"these modules reach the confirmation set: {offenders}"
    from gensr.config import load_params

    params = load_params(ROOT / "params.yaml", ["sample.split=pref"])
    from gensr.stages.sample import sample_candidates

    for split in ("confirm", "test"):
        with pytest.raises(Exception):
            sample_candidates(load_params(ROOT / "params.yaml", [f"sample.split={split}"]), "ar")
    assert params.sample.split == "pref"


# --- dvc.yaml ------------------------------------------------------------------------------------------
def _param_reads(module: Path) -> set[str]:
    """Dotted `params.<block>.<key>` reads in a module's source (params.x.y, params.restorers.<p> via getattr)."""
    tree = ast.parse(module.read_text())
    reads = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain = []
            cur = node
            while isinstance(cur, ast.Attribute):
                chain.append(cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name) and cur.id == "params" and chain:
                reads.add(".".join(reversed(chain)))
    return {r for r in reads if not any(o.startswith(r + ".") for o in reads)}  # the full chains only


def test_dvc_evaluate_stage_lists_every_param_its_code_reads():
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["evaluate"]["do"]
    declared = [p.replace("${item}", "ar") for p in stage["params"]]
    modules = [ROOT / "src/gensr/stages/evaluate.py", ROOT / "src/gensr/sampling/restore.py"]
    reads = set().union(*(_param_reads(m) for m in modules))
    reads = {r for r in reads if not r.startswith("paths")}  # where files live, not what is in them
    # restore.py reads the sampling knobs of the paradigm at hand: getattr(params.restorers, paradigm).sampling
    assert "restorers.ar.sampling" in declared
    uncovered = sorted(r for r in reads if not any(r == d or r.startswith(d + ".") for d in declared))
    assert not uncovered, f"dvc.yaml's evaluate stage misses params its code reads: {uncovered}"
    for needed in ("sample.seed", "restorers.restore_batch", "restorers.threads"):
        assert needed in declared


# the stages whose code reads scaleout.*, and the modules it reads them in
SCALEOUT_READERS = {
    "train_codec": ["src/gensr/stages/restorers.py"],
    "train_base": ["src/gensr/stages/restorers.py"],
    "dpo": ["src/gensr/stages/dpo.py"],
    "ablation": ["src/gensr/stages/ablation.py", "src/gensr/stages/dpo.py"],
    "sample": ["src/gensr/stages/sample.py"],
    "score_candidates": ["src/gensr/stages/score.py", "src/gensr/stages/sample.py"],
}


def test_dvc_stages_declare_the_scaleout_params_that_can_change_their_outputs():
    """scaleout.trainer (the fits' devices) changes weights within float tolerance, so the stages that fit declare
    it. scaleout.shards only deals resume shards over Dagster partitions: the tables are byte-identical for any value
    (tests/test_scaleout.py), so no stage declares it and dvc.yaml says why."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, modules in SCALEOUT_READERS.items():
        body = stages[name].get("do", stages[name])
        declared = body.get("params", [])
        reads = {r for m in modules for r in _param_reads(ROOT / m) if r.split(".")[0] == "scaleout"}
        needed = sorted(r for r in reads if not r.startswith("scaleout.shards"))
        uncovered = [r for r in needed if not any(r == d or r.startswith(d + ".") for d in declared)]
        assert not uncovered, f"dvc.yaml's {name} stage misses {uncovered}, which its code reads"
        assert not {"scaleout", "scaleout.shards"} & set(declared), f"{name}: shards change no output"
    readers = {m.relative_to(ROOT).as_posix() for m in (ROOT / "src" / "gensr").rglob("*.py")
               if any(r.split(".")[0] == "scaleout" for r in _param_reads(m))}
    known = set().union(*SCALEOUT_READERS.values()) | {"src/gensr/config/__init__.py"}  # validation only
    assert readers <= known, f"modules reading scaleout.* that no stage entry above covers: {sorted(readers - known)}"
    dvc_text = (ROOT / "dvc.yaml").read_text()
    assert "scaleout.shards is no param here" in dvc_text
