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
    """MLflow store location and the UI's port; runs are tagged with the Dagster run id."""

    mlruns_dir: str = "mlruns"
    ui_port: int | None = None  # null = $GENSR_MLFLOW_PORT, else 5000 (what `make mlflow-ui` serves on)

    def run_url(self, run_id: str, experiment: str) -> str:
        """Link to a run in the model-training view of the MLflow UI."""
        from gensr.tracking import configure, ui_url

        exp = configure(self.mlruns_dir).get_experiment_by_name(experiment)
        return ui_url(exp.experiment_id if exp is not None else None, run_id if exp is not None else None,
                      port=self.ui_port)
