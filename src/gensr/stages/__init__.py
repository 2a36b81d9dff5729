"""Pipeline stages: the only door the shells (CLI/DVC and Dagster) use.

Each module holds plain functions `(params, paths) -> outputs` that write atomically and
return a small summary dict that the shells turn into logs or Dagster metadata.
"""
