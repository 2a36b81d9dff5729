"""Dagster shell over gensr.stages: assets, checks and resources, no pipeline logic."""
