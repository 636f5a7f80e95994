"""The model formats table: the one place the settings, the repository reader and the loader
learn which files are models."""

from __future__ import annotations

import pytest

from ipc.contract import formats, repository
from ipc.contract.settings import check_model_specs
from worker.models import loader


def test_every_format_has_a_loader():
    assert {format.name for format in formats.FORMATS} == set(loader.LOADERS)


@pytest.mark.parametrize("suffix", formats.SUFFIXES)
def test_every_suffix_is_a_flag_and_a_repository_file(tmp_path, suffix):
    check_model_specs([f"m=weights{suffix}"])
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / f"model{suffix}").write_bytes(b"")
    assert repository.model_file(str(folder)) == str(folder / f"model{suffix}")
    assert formats.format_of(f"weights{suffix}") is not None


def test_only_pickles_run_code():
    assert {format.name for format in formats.FORMATS if format.runs_code} == {"pickle"}
    assert formats.SAFE == ".npz, .onnx, .skops"
