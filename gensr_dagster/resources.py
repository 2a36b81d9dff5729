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
    """MLflow store location and the UI's address; runs are tagged with the Dagster run id."""

    mlruns_dir: str = "mlruns"
    ui_port: int = 5000  # `make mlflow-ui` serves on this port

    def run_url(self, run_id: str, experiment: str) -> str:
        """Link to a run in the model-training view of the MLflow UI."""
        from gensr.tracking import configure

        exp = configure(self.mlruns_dir).get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp is not None else "0"
        return f"http://127.0.0.1:{self.ui_port}/#/experiments/{exp_id}/runs/{run_id}?workflowType=machine_learning"
