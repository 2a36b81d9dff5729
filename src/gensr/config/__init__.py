"""Typed loader for params.yaml, the only place a number lives.

`load_params()` validates the whole file against pydantic models, rejects unknown keys and
out-of-range values with a message that names the dotted key, and applies `key=value`
overrides (the same syntax as `dvc exp run -S`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml
from pydantic import ValidationError, model_validator

from gensr.config.ablation import AblationParams
from gensr.config.align import DPOParams, EvaluateParams, PairsParams
from gensr.config.base import Block
from gensr.config.confirm import ConfirmParams
from gensr.config.corpus import CorpusParams, IngestParams
from gensr.config.degrade import DegradeParams
from gensr.config.metrics import MetricsParams
from gensr.config.models import RestorersParams, SampleParams, SpectralCodecParams
from gensr.config.project import AudioParams, PathsParams
from gensr.config.pseudo import PseudoLabelParams, SingingEvalParams
from gensr.config.report import ReportParams
from gensr.config.scaleout import ScaleoutParams
from gensr.config.singing import SingingParams
from gensr.config.singing_dev import SingingDevParams
from gensr.config.voicefixer import VoicefixerParams

DEFAULT_PARAMS = Path("params.yaml")


class ConfigError(ValueError):
    """params.yaml (or an override) is invalid; the message names the file and the key."""


class Params(Block):
    seed: int
    paths: PathsParams
    audio: AudioParams
    ingest: IngestParams
    corpus: CorpusParams
    degrade: DegradeParams
    metrics: MetricsParams
    codec: SpectralCodecParams
    restorers: RestorersParams
    sample: SampleParams
    pairs: PairsParams
    dpo: DPOParams
    evaluate: EvaluateParams
    confirm: ConfirmParams
    ablation: AblationParams
    singing: SingingParams | None = None  # optional, so params dumped before the block existed still load
    voicefixer: VoicefixerParams | None = None  # optional, as singing
    pseudo_labels: PseudoLabelParams | None = None  # optional, as singing
    singing_eval: SingingEvalParams | None = None  # optional, as singing
    singing_dev: SingingDevParams | None = None  # optional: only `gensr singing-annotators` reads it
    report: ReportParams | None = None  # optional, as singing (the demo page says which block is missing)
    scaleout: ScaleoutParams | None = None  # optional: without it every fit runs in one process, one shard partition

    @model_validator(mode="after")
    def _own_seeds(self):
        if self.singing is not None and self.singing.seed == self.seed:
            raise ValueError(f"singing.seed must differ from seed ({self.seed}): the singing corpus needs draws of its own")
        if self.singing is not None and self.singing_dev is not None:
            taken = {"seed": self.seed, "singing.seed": self.singing.seed, "confirm.seed": self.confirm.seed}
            same = [name for name, value in taken.items() if value == self.singing_dev.seed]
            if same:
                raise ValueError(f"singing_dev.seed ({self.singing_dev.seed}) must differ from {', '.join(same)}: "
                                 "the dev build needs draws of its own")
            if self.singing_dev.probe is not None:
                taken["singing_dev.seed"] = self.singing_dev.seed
                same = [name for name, value in taken.items() if value == self.singing_dev.probe.seed]
                if same:
                    raise ValueError(f"singing_dev.probe.seed ({self.singing_dev.probe.seed}) must differ from "
                                     f"{', '.join(same)}: the probe's build needs draws of its own")
        return self


def _set_dotted(tree: dict, dotted: str, value: Any, source: str) -> None:
    keys = dotted.split(".")
    node = tree
    for i, key in enumerate(keys[:-1]):
        if key not in node or not isinstance(node[key], dict):
            raise ConfigError(f"{source}: override '{dotted}': '{'.'.join(keys[: i + 1])}' is not a params block")
        node = node[key]
    node[keys[-1]] = value


def _yaml_problem(err: yaml.YAMLError) -> str:
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def _duplicate_key(node, path: str = "") -> str | None:
    """The dotted name of the first key a YAML mapping repeats (PyYAML keeps the last one silently)."""
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else repr(key_node)
            dotted = f"{path}.{key}" if path else key
            if key in seen:
                return f"{dotted} (again at line {key_node.start_mark.line + 1})"
            seen.add(key)
            found = _duplicate_key(value_node, dotted)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _duplicate_key(item, f"{path}[{i}]")
            if found:
                return found
    return None


def parse_yaml(text: str, source: str, key: str = ""):
    """YAML text -> plain Python, or ConfigError naming `source`: invalid YAML and repeated keys are refused.
    `key` is the dotted name the text is the value of (an override's key)."""
    try:
        duplicate = _duplicate_key(yaml.compose(text, Loader=yaml.SafeLoader), key)
        if duplicate:
            raise ConfigError(f"{source}: key {duplicate} is given twice; keep one")
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {_yaml_problem(err)}") from None


def parse_overrides(overrides: Iterable[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """Turn ['a.b=3', 'c=x'] into {'a.b': 3, 'c': 'x'}; values are parsed as YAML scalars."""
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override -S {item!r} must look like key.sub=value")
        out[key.strip()] = parse_yaml(raw, f"override -S {item!r}", key.strip())
    return out


def _format_error(source: str, err: ValidationError) -> str:
    """One line: every invalid key with what is wrong with it (the CLI prints it as is)."""
    problems = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            problems.append(f"{key}: unknown key (check its spelling against the documented params)")
        elif e["type"] == "missing":
            problems.append(f"{key}: required key is missing")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            problems.append(f"{key}: {msg} (got {str(repr(e.get('input')))[:80]})")
    return f"{source}: invalid params: " + "; ".join(problems)


def params_from_dict(tree: Mapping[str, Any], source: str = "params", overrides=None) -> Params:
    tree = yaml.safe_load(yaml.safe_dump(dict(tree)))  # deep copy with plain types
    for key, value in parse_overrides(overrides).items():
        _set_dotted(tree, key, value, source)
    try:
        params = Params.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_error(source, err)) from None
    uneven = uneven_batches(params)
    if uneven:
        raise ConfigError(f"{source}: invalid params\n  scaleout.trainer.devices: {params.scaleout.trainer.devices} must "
                          f"divide every global batch size, and does not divide {uneven}")
    return params


def uneven_batches(params: Params) -> dict[str, int]:
    """The batch sizes of Lightning fits that scaleout.trainer.devices does not divide (each rank takes batch / devices)."""
    devices = params.scaleout.trainer.devices if params.scaleout is not None else 1
    batches = {"codec.autoencoder.batch_size": params.codec.autoencoder.batch_size,
               "codec.decoder_finetune.batch_size": params.codec.decoder_finetune.batch_size,
               "ablation.budget.batch_size": params.ablation.budget.batch_size}
    for p in ("ar", "mgm", "fm"):
        batches[f"restorers.{p}.train.batch_size"] = getattr(params.restorers, p).train.batch_size
        batches[f"dpo.{p}.batch_size"] = getattr(params.dpo, p).batch_size
    return {k: v for k, v in batches.items() if v % devices}


def load_params(path: str | Path = DEFAULT_PARAMS, overrides=None) -> Params:
    """Load and validate params.yaml; `overrides` is ['key.sub=value', ...] or a dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found (run from the project root or pass --params)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a YAML params file (not UTF-8 text: byte {err.object[err.start]:#04x} "
                          f"at offset {err.start})") from None
    tree = parse_yaml(text, str(path)) or {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: top level must be a mapping of params blocks")
    return params_from_dict(tree, source=str(path), overrides=overrides)


def with_overrides(params: Params, overrides) -> Params:
    """A copy of `params` with dotted overrides applied and re-validated."""
    return params_from_dict(params.model_dump(mode="json"), source="overrides", overrides=overrides)


__all__ = ["ConfigError", "Params", "load_params", "params_from_dict", "with_overrides", "parse_overrides"]
