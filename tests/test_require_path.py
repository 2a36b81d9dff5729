"""A stage's missing input is one error everywhere: the file, what it is, and the command that makes it."""

from __future__ import annotations

import pytest

from gensr import storage
from gensr.stages import ablation, dpo, evaluate, pairs, singing


def test_a_missing_input_names_the_file_what_it_is_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"labels\.parquet: base label table not found; run `gensr singing-la"):
        storage.require_path(tmp_path / "labels.parquet", "base label table", "run `gensr singing-labels`")
    (tmp_path / "labels.parquet").write_bytes(b"")
    assert storage.require_path(str(tmp_path / "labels.parquet"), "x", "y") == tmp_path / "labels.parquet"


def test_every_stage_uses_the_one_in_storage():
    for module in (ablation, dpo, evaluate, pairs, singing):
        assert module.require_path is storage.require_path, module.__name__
        assert not hasattr(module, "_need"), module.__name__
