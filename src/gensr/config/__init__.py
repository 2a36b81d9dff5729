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
from gensr.config.singing import SingingParams
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
    report: ReportParams | None = None  # optional, as singing (the demo page says which block is missing)

    @model_validator(mode="after")
    def _own_seeds(self):
        if self.singing is not None and self.singing.seed == self.seed:
            raise ValueError(f"singing.seed must differ from seed ({self.seed}): the singing corpus needs draws of its own")
        return self


def _set_dotted(tree: dict, dotted: str, value: Any, source: str) -> None:
    keys = dotted.split(".")
    node = tree
    for i, key in enumerate(keys[:-1]):
        if key not in node or not isinstance(node[key], dict):
            raise ConfigError(f"{source}: override '{dotted}': '{'.'.join(keys[: i + 1])}' is not a params block")
        node = node[key]
    node[keys[-1]] = value


def parse_overrides(overrides: Iterable[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """Turn ['a.b=3', 'c=x'] into {'a.b': 3, 'c': 'x'}; values are parsed as YAML scalars."""
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.sub=value")
        key, raw = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw)
    return out


def _format_error(source: str, err: ValidationError) -> str:
    lines = [f"{source}: invalid params"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (check its spelling against the documented params)")
        elif e["type"] == "missing":
            lines.append(f"  {key}: required key is missing")
        else:
            lines.append(f"  {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def params_from_dict(tree: Mapping[str, Any], source: str = "params", overrides=None) -> Params:
    tree = yaml.safe_load(yaml.safe_dump(dict(tree)))  # deep copy with plain types
    for key, value in parse_overrides(overrides).items():
        _set_dotted(tree, key, value, source)
    try:
        return Params.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_error(source, err)) from None


def load_params(path: str | Path = DEFAULT_PARAMS, overrides=None) -> Params:
    """Load and validate params.yaml; `overrides` is ['key.sub=value', ...] or a dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found (run from the project root or pass --params)")
    with open(path) as f:
        tree = yaml.safe_load(f) or {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: top level must be a mapping of params blocks")
    return params_from_dict(tree, source=str(path), overrides=overrides)


def with_overrides(params: Params, overrides) -> Params:
    """A copy of `params` with dotted overrides applied and re-validated."""
    return params_from_dict(params.model_dump(mode="json"), source="overrides", overrides=overrides)


__all__ = ["ConfigError", "Params", "load_params", "params_from_dict", "with_overrides", "parse_overrides"]
