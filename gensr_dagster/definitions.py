"""Dagster Definitions: every asset and check under gensr_dagster.assets, plus resources."""

from __future__ import annotations

import dagster as dg

from gensr_dagster import assets
from gensr_dagster.resources import MlflowResource, ParamsResource

defs = dg.Definitions(
    assets=dg.load_assets_from_package_module(assets),
    asset_checks=dg.load_asset_checks_from_package_module(assets),
    resources={"params": ParamsResource(), "mlflow": MlflowResource()},
)
