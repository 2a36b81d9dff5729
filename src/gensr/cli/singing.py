"""`gensr singing-corpus`: the embedded singing corpus (data/singing)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from gensr.cli import ParamsOption, SetOption, app, load


@app.command("singing-corpus")
def singing_corpus_command(
    params: Path = ParamsOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Sing eSpeak NG lyrics to seeded melodies (WORLD), degrade them, and add singing.user_dir's real recordings.

    Writes <paths.data>/singing: finetune.parquet (no references), test.parquet, references.parquet (test only).
    """
    from gensr.stages.singing_corpus import build_singing_corpus

    cfg = load(params, set_)
    start = time.perf_counter()
    try:
        summary = build_singing_corpus(cfg)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        typer.echo(f"error: {err}".splitlines()[0], err=True)
        raise typer.Exit(2) from None
    splits = summary["splits"]
    typer.echo(f"{summary['n_clips']} sung clips ({summary['sung_seconds']:.0f} s): finetune {splits['finetune']}, "
               f"test {splits['test']}, real {splits['real']}; {summary['n_degraded']} degraded, quarantined "
               f"{summary['n_quarantined']}, into {summary['path']}; {time.perf_counter() - start:.1f} s")


def _fail(err: Exception) -> None:
    typer.echo(f"error: {err}".splitlines()[0], err=True)
    raise typer.Exit(2) from None


@app.command("singing-labels")
def singing_labels_command(
    params: Path = ParamsOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Pseudo-label every clip of data/singing/finetune.parquet with the aligned annotator AND its base (control).

    The annotator is pseudo_labels.paradigm (default mgm): models/aligned/<paradigm>/<pseudo_labels.strategy>/
    restorer.pt, and models/base/<paradigm>/restorer.pt for the control labels, one seed per clip. Each label
    passes a quality gate of non-intrusive checks only (silence, NaN/Inf, length, level, DNSMOS SIG/BAK/OVRL
    >= pseudo_labels.gate.*). Writes data/singing_labels/{aligned,base}/: wav/, labels.parquet (kept or dropped
    with the reason, per clip), summary.json; prints the counts per reason.
    """
    from gensr.stages.singing import build_pseudo_labels

    cfg = load(params, set_)
    try:
        summary = build_pseudo_labels(cfg)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    for source, s in summary["sources"].items():
        dropped = ", ".join(f"{k} {v}" for k, v in s["dropped"].items()) or "none"
        typer.echo(f"{source} labels ({summary['paradigm']}): kept {s['n_kept']} of {s['n_labels']}; dropped: {dropped}")
    typer.echo(f"into {summary['path']}; {summary['seconds']:.1f} s")


@app.command("initial-voicefixer")
def initial_voicefixer_command(
    params: Path = ParamsOption,
    set_: Optional[list[str]] = SetOption,
    no_track: bool = typer.Option(False, "--no-track", help="Skip MLflow logging."),
) -> None:
    """Train the initial Voicefixer on (degraded, clean) speech of the corpus train split (voicefixer.model/train).

    With voicefixer.official_analysis_ckpt and official_vocoder_ckpt set, the official weights are the initial
    model instead. Writes models/voicefixer/initial/voicefixer.pt + summary.json; one MLflow run ('voicefixer').
    """
    from gensr.stages.singing import train_initial_voicefixer

    cfg = load(params, set_)
    try:
        s = train_initial_voicefixer(cfg, track=not no_track)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    typer.echo(f"initial Voicefixer: {s['checkpoint']} ({s['n_train_pairs']} pairs); {s['seconds']:.1f} s"
               + (f"; {s['mlflow_url']}" if s.get("mlflow_url") else ""))


@app.command("finetune-voicefixer")
def finetune_voicefixer_command(
    labels: list[str] = typer.Option(["aligned", "base"], "--labels",
                                     help="Label set(s) to fine-tune on: aligned (the annotator's) and/or base "
                                          "(the control); repeatable."),
    params: Path = ParamsOption,
    set_: Optional[list[str]] = SetOption,
    no_track: bool = typer.Option(False, "--no-track", help="Skip MLflow logging."),
) -> None:
    """Fine-tune the initial Voicefixer on (degraded singing, kept pseudo-label) pairs (voicefixer.finetune).

    Reads data/singing/finetune.parquet (no reference column), its degraded WAVs and
    data/singing_labels/<labels>/ only: never a clean singing reference. Writes
    models/voicefixer/finetuned_<labels>/voicefixer.pt + summary.json; one MLflow run each ('voicefixer').
    """
    from gensr.stages.singing import finetune_voicefixer

    cfg = load(params, set_)
    for source in labels:
        try:
            s = finetune_voicefixer(cfg, source, track=not no_track)
        except (FileNotFoundError, ValueError) as err:
            _fail(err)
        typer.echo(f"fine-tuned on {source} labels: {s['n_kept']} of {s['n_labels']} kept; {s['checkpoint']}; "
                   f"{s['seconds']:.1f} s" + (f"; {s['mlflow_url']}" if s.get("mlflow_url") else ""))


@app.command("singing-evaluation")
def singing_evaluation_command(
    params: Path = ParamsOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Evaluate raw input, initial Voicefixer, Voicefixer fine-tuned on aligned / base labels, and the aligned annotator.

    Singing test split: every metric of metrics.names (intrusive ones against data/singing/references.parquet;
    WER/CER only if the content backend transcribes clean sung references, see singing_eval). Real recordings:
    non-intrusive metrics only. Paired-bootstrap CIs (evaluate.n_bootstrap, evaluate.confidence) of each system
    minus the initial Voicefixer and of aligned-label minus base-label fine-tuning. Writes reports/singing/:
    table.md, evaluation.json, per_clip.parquet, triptychs/*.png.
    """
    from gensr.stages.singing import evaluate_singing

    cfg = load(params, set_)
    try:
        res = evaluate_singing(cfg)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    typer.echo(res["markdown"])
    typer.echo(f"\ninto {res['path']}; {res['seconds']['total']:.1f} s")


@app.command("singing-annotators")
def singing_annotators_command(
    params: Path = ParamsOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Choose the singing annotator on dev: every candidate of singing_dev.annotators against the raw input.

    Builds a dev singing set with the corpus code and singing_dev.seed (never the singing test split; cached in
    data/singing_dev/singing until singing, singing_dev or the generator's code change), restores its referenced
    clips with each candidate (aligned:<paradigm> or base:<paradigm>), adds the codec's ceiling when a token paradigm (ar, mgm) is among them
    and, with singing_dev.student, the initial Voicefixer the labels are to teach, and scores singing_dev.metrics
    against the clean sung references. Prints each system minus the raw input with paired-bootstrap CIs; writes
    reports/singing_dev/annotators.{json,md} and per_clip.parquet.
    """
    from gensr.stages.singing_dev import compare_annotators

    cfg = load(params, set_)
    try:
        res = compare_annotators(cfg)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    from gensr.stages.singing_dev import dev_reports_dir, markdown

    typer.echo(markdown(res))
    typer.echo(f"into {dev_reports_dir(cfg)}; {res['timings_s']['total']:.1f} s")


@app.command("singing-probe")
def singing_probe_command(
    params: Path = ParamsOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """What each label source can teach the initial Voicefixer, on a dev build (never the singing test split).

    Builds a singing set of its own (singing_dev.probe.seed, cached in data/singing_dev/probe/singing), labels its
    finetune split with every source of singing_dev.probe.sources (`oracle`: the clean sung reference, the best label
    any annotator could give; or <aligned|base>:<paradigm>, gated by pseudo_labels.gate), fine-tunes a copy of the
    initial Voicefixer on each label set with voicefixer.finetune, and scores every copy on the build's test split
    against its references. Prints each copy minus the initial Voicefixer with paired-bootstrap CIs; writes
    reports/singing_dev/probe.{json,md}. If the oracle labels do not improve the student, the fine-tuning budget is
    what fails, not the annotator.
    """
    from gensr.stages.singing_dev import dev_reports_dir
    from gensr.stages.singing_probe import markdown, run_probe

    cfg = load(params, set_)
    try:
        res = run_probe(cfg)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    typer.echo(markdown(res))
    typer.echo(f"into {dev_reports_dir(cfg)}; {res['timings_s']['total']:.1f} s")
