"""Dagster shell over gensr.stages: assets, checks and resources, no pipeline logic.

Asset modules must not use `from __future__ import annotations`: Dagster inspects the
`context` annotation at definition time and rejects it as a string.
"""
