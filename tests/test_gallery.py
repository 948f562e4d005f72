from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.errors import GalleryError
from edge.gallery.exchange import export_document, parse_people
from edge.gallery.store import Gallery, NewEmbedding, migrations

REPO = Path(__file__).resolve().parent.parent

MODEL = "test-model"


def emb(seed: int, model: str = MODEL) -> NewEmbedding:
    v = np.random.default_rng(seed).normal(size=128).astype(np.float32)
    return NewEmbedding(v / np.linalg.norm(v), model, 0.8, f"photo:{seed}.jpg")


def test_migrations_apply_once_and_record(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    with Gallery(path) as g:
        g.put_person("p1", "Ann", [emb(1)])
    with Gallery(path) as g:  # reopening applies nothing twice and keeps the data
        assert [p.person_id for p in g.people()] == ["p1"]
        applied = [m.name for m in migrations.applied(g.db)]
        assert applied == ["m001_gallery"]
        assert g.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_version_changes_on_every_write(tmp_path: Path) -> None:
    with Gallery(tmp_path / "g.db") as g:
        v0 = g.version
        v1 = g.put_person("p1", "Ann", [emb(1)])
        v2 = g.put_person("p1", "Ann", [emb(2)])
        assert g.person("p1").embeddings == 2
        v3 = g.put_person("p1", "Ann K", [emb(3)], replace=True)
        assert g.person("p1").embeddings == 1 and g.person("p1").name == "Ann K"
        v4 = g.remove_person("p1")
        assert v0 < v1 < v2 < v3 < v4


def test_a_failed_write_changes_nothing(tmp_path: Path) -> None:
    with Gallery(tmp_path / "g.db") as g:
        g.put_person("p1", "Ann", [emb(1)])
        version = g.version
        bad = NewEmbedding(np.full(128, np.nan, dtype=np.float32), MODEL, 0.5, "x")
        with pytest.raises(GalleryError, match="unit-length"):
            g.put_person("p2", "Bob", [emb(2), bad])
        with pytest.raises(GalleryError, match="no embeddings"):
            g.put_person("p3", "Cid", [])
        with pytest.raises(GalleryError, match="invalid person id"):
            g.put_person("../etc", "x", [emb(4)])
        assert [p.person_id for p in g.people()] == ["p1"] and g.version == version


def test_remove_erases_every_embedding(tmp_path: Path) -> None:
    with Gallery(tmp_path / "g.db") as g:
        g.put_person("p1", "Ann", [emb(1), emb(2)])
        g.put_person("p2", "Bob", [emb(3)])
        g.remove_person("p1")
        assert g.db.execute("SELECT COUNT(*) FROM embeddings WHERE person_id = 'p1'").fetchone()[0] == 0
        with pytest.raises(GalleryError, match="no person"):
            g.remove_person("p1")
        assert g.index(MODEL).people == ("p2",)


def test_removed_biometric_data_is_gone_from_the_files_not_only_from_the_tables(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    removed, replaced, kept = emb(11), emb(12), emb(13)
    with Gallery(db) as g, Gallery(db) as reader:
        reader.people()  # a second connection, as in the daemon (the event store shares the file)
        g.put_person("p1", "Zephyrine Quillfeather", [removed])
        g.put_person("p2", "Bob", [replaced])
        g.put_person("p2", "Bob", [kept], replace=True)  # Bob's old embedding is replaced
        g.remove_person("p1")
        files = [f for f in (db, tmp_path / "g.db-wal") if f.exists()]
        raw = b"".join(f.read_bytes() for f in files)
        assert removed.vector.astype(np.float32).tobytes() not in raw
        assert replaced.vector.astype(np.float32).tobytes() not in raw
        assert b"Zephyrine" not in raw
        assert kept.vector.astype(np.float32).tobytes() in raw  # the check can see a vector that is there


def test_index_is_per_model_and_follows_the_version(tmp_path: Path) -> None:
    with Gallery(tmp_path / "g.db") as g:
        g.put_person("p1", "Ann", [emb(1)])
        g.put_person("p2", "Bob", [emb(2, model="other")])
        first = g.index(MODEL)
        assert first.people == ("p1",) and g.index(MODEL) is first
        g.put_person("p3", "Cid", [emb(3)])
        assert g.index(MODEL).people == ("p1", "p3")


def test_export_import_round_trip(tmp_path: Path) -> None:
    with Gallery(tmp_path / "a.db") as a:
        a.put_person("p1", "김민지", [emb(1), emb(2)], metadata={"group": "3A"})
        a.put_person("p2", "Bob", [emb(3)])
        doc = json.loads(json.dumps(export_document(a)))
        vectors = a.index(MODEL).vectors.copy()
    records = parse_people(doc, MODEL, "export.json")
    with Gallery(tmp_path / "b.db") as b:
        b.put_person("old", "Old", [emb(9)])
        b.put_people(records, replace_all=True)
        assert [(p.person_id, p.name, p.embeddings) for p in b.people()] == [("p1", "김민지", 2), ("p2", "Bob", 1)]
        assert b.person("p1").metadata == {"group": "3A"}
        np.testing.assert_allclose(b.index(MODEL).vectors, vectors, atol=1e-6)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(format="other"), "not an edge-gallery"),
        (lambda d: d["people"][0].update(person_id="a b"), r"people\[0\]\.person_id"),
        (lambda d: d["people"][0]["embeddings"][0].update(model_id="x"), r"embeddings\[0\]\.model_id"),
        (lambda d: d["people"][0]["embeddings"][0].update(vector=["a"]), r"vector: must be a list of numbers"),
        (lambda d: d["people"][0]["embeddings"][0].update(vector=[0.0] * 128), "unit-length"),
        (lambda d: d["people"].append(dict(d["people"][0])), "appears twice"),
    ],
)
def test_bad_import_documents_name_the_field(tmp_path: Path, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    with Gallery(tmp_path / "a.db") as a:
        a.put_person("p1", "Ann", [emb(1)])
        doc = json.loads(json.dumps(export_document(a)))
    mutate(doc)
    with pytest.raises(GalleryError, match=message):
        parse_people(doc, MODEL, "in.json")


def test_a_file_that_is_not_sqlite_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(GalleryError, match="cannot open the gallery database"):
        Gallery(path)
    assert isinstance(sqlite3.sqlite_version, str)


def test_gallery_writes_wait_for_a_busy_event_writer_and_never_fail(tmp_path: Path) -> None:
    """Another process appends events to the same file as fast as it can; erasures and enrollments still succeed
    (a deferred transaction that read first used to fail at once with `database is locked`)."""
    db = tmp_path / "edge.db"
    with Gallery(db) as g:
        for i in range(20):
            g.put_person(f"p{i}", "Ann", [emb(i)])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writer = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "crash_writer.py"), str(db), "busy"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        with Gallery(db) as g:
            for i in range(20):
                g.people()  # a read first, as `sync` does before it writes
                g.remove_person(f"p{i}")
                g.put_person(f"q{i}", "Bob", [emb(100 + i)])
            assert writer.poll() is None, "the event writer kept writing all along"
            assert [p.person_id for p in g.people()] == sorted(f"q{i}" for i in range(20))
    finally:
        writer.kill()
        writer.wait(10)


def test_a_lock_held_past_every_retry_is_a_clear_gallery_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import edge.gallery.store

    monkeypatch.setattr(edge.gallery.store, "BUSY_TIMEOUT_S", 0.1)
    db = tmp_path / "edge.db"
    with Gallery(db) as g:
        g.put_person("p1", "Ann", [emb(1)])
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another writer that never lets go
        try:
            with pytest.raises(GalleryError, match="removing person 'p1' failed, nothing was changed"):
                g.remove_person("p1")
        finally:
            holder.rollback()
            holder.close()
        assert [p.person_id for p in g.people()] == ["p1"]
        g.remove_person("p1")  # the lock is free again


def test_a_gallery_written_by_a_newer_edge_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    with Gallery(db) as g:
        g.put_person("p1", "Ann", [emb(1)])
        g.db["_sqlite_migrations"].insert(  # type: ignore[union-attr]
            {"migration_set": "edge.gallery.store", "name": "m002_from_the_future", "applied_at": "2027-01-01"}
        )
    with pytest.raises(GalleryError, match="written by a newer edge .*m002_from_the_future"):
        Gallery(db)
