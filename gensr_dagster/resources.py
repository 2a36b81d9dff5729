"""Resources shared by assets: where params.yaml lives and how to reach MLflow."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from gensr.config import Params, load_params


class ParamsResource(dg.ConfigurableResource):
    """The project's params.yaml plus optional dotted overrides for one run."""

    params_path: str = "params.yaml"
    overrides: list[str] = []

    def load(self, extra: list[str] | None = None) -> Params:
        return load_params(Path(self.params_path), list(self.overrides) + list(extra or []))


class MlflowResource(dg.ConfigurableResource):
    """MLflow store location; runs are tagged with the Dagster run id."""

    mlruns_dir: str = "mlruns"
