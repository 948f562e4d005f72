"""The embedding model is checked at load: a missing or altered file is a clear error, never a silent wrong model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.embed import Embedder
from edge.errors import ModelError
from edge.manifest import DEFAULT_MODELS_DIR, load_manifest


@pytest.fixture()
def models(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    manifest = load_manifest()
    shutil.copy(DEFAULT_MODELS_DIR / "manifest.yml", folder)
    shutil.copy(manifest.path, folder)
    return folder


def test_the_shipped_model_loads_and_embeds(models: Path) -> None:
    embedder = Embedder(models, num_threads=1)
    vector = embedder.embed(np.full((112, 112, 3), 128, dtype=np.uint8))
    assert vector.shape == (128,) and abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5
    assert embedder.model_id == load_manifest().id


def test_a_missing_model_file_is_named(models: Path) -> None:
    manifest = load_manifest(models)
    manifest.path.unlink()
    with pytest.raises(ModelError, match=f"{manifest.path.name} is missing"):
        Embedder(models)


def test_an_altered_model_file_fails_its_checksum(models: Path) -> None:
    manifest = load_manifest(models)
    data = bytearray(manifest.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    manifest.path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256 .* but the manifest expects"):
        Embedder(models)


def test_a_broken_manifest_is_named(models: Path) -> None:
    (models / "manifest.yml").write_text("id: x\nfile: y.tflite\n")
    with pytest.raises(ModelError, match="missing key"):
        Embedder(models)


def test_threads_must_be_positive(models: Path) -> None:
    with pytest.raises(ValueError, match="num_threads"):
        Embedder(models, num_threads=0)
