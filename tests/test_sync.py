"""Gallery commands from the central server against a real gallery file and the real models on real photos."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Dict, Iterator, List

import numpy as np
import pytest

from edge.config import Config
from edge.contract import validate
from edge.detect import FaceDetector
from edge.embed import Embedder
from edge.gallery import Gallery
from edge.recognize import Recognizer
from edge.sync import GallerySync


@pytest.fixture(scope="module")
def recognizer() -> Iterator[Recognizer]:
    config = Config()
    with FaceDetector(config.detector) as detector:
        yield Recognizer(detector, Embedder(num_threads=2), config.quality)


@pytest.fixture()
def gallery(tmp_path: Path) -> Iterator[Gallery]:
    with Gallery(tmp_path / "gallery.db") as g:
        yield g


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def unit(size: int, seed: int) -> List[float]:
    vec = np.random.default_rng(seed).normal(size=size)
    return [float(x) for x in vec / np.linalg.norm(vec)]


def command(op: str, **body: Any) -> Dict[str, Any]:
    return {"schema": "edge.gallery_command/1", "request_id": f"r-{op}", "op": op, **body}


def person(sync: GallerySync, person_id: str, seed: int = 0, count: int = 1) -> Dict[str, Any]:
    size = sync.recognizer.embedder.manifest.embedding_size
    embeddings = [{"model_id": sync.model_id, "vector": unit(size, seed + k)} for k in range(count)]
    return {"person_id": person_id, "name": person_id.title(), "embeddings": embeddings}


def apply(sync: GallerySync, cmd: Dict[str, Any]) -> Dict[str, Any]:
    result = sync.apply(cmd)
    validate("edge.gallery_result/1", result)
    assert result["request_id"] == cmd.get("request_id") and result["op"] == cmd.get("op")
    return result


def embedding_rows(gallery: Gallery, person_id: str) -> int:
    return int(gallery.db.execute("SELECT COUNT(*) FROM embeddings WHERE person_id = ?", [person_id]).fetchone()[0])


def test_upsert_photos_reports_each_photo_and_skips_the_corrupt_one(
    gallery: Gallery, recognizer: Recognizer, data: Path
) -> None:
    sync = GallerySync(gallery, recognizer)
    ham = data / "hamilton"
    photos = [b64(ham / "lin-manuel-miranda.png"), "not base64 at all!", base64.b64encode(b"GIF89a junk").decode()]
    result = apply(sync, command("upsert", person={"person_id": "lmm", "name": "Lin-Manuel", "photos": photos}))
    assert result["status"] == "ok", result["reason"]
    assert [p["outcome"] for p in result["photos"]] == ["enrolled", "unreadable", "unreadable"]
    assert "base64" in result["photos"][1]["detail"] and "not a readable image" in result["photos"][2]["detail"]
    assert result["gallery_version"] == gallery.version == 1 and result["people"] == 1
    [stored] = gallery.embeddings_of("lmm")
    assert stored["model_id"] == recognizer.embedder.model_id and stored["source"] == "central:photo 0"

    # An upsert replaces the person's embeddings (here with the Obama photo), in one write.
    result = apply(
        sync, command("upsert", base_version=1, person={"person_id": "lmm", "photos": [b64(ham / "obama.jpg")]})
    )
    assert result["status"] == "ok" and result["gallery_version"] == 2
    assert embedding_rows(gallery, "lmm") == 1
    assert gallery.person("lmm").name == "lmm"


def test_upsert_photos_without_a_usable_face_writes_nothing(gallery: Gallery, recognizer: Recognizer) -> None:
    sync = GallerySync(gallery, recognizer)
    blank = base64.b64encode(_png_of_grey()).decode()
    result = apply(sync, command("upsert", person={"person_id": "ghost", "photos": ["@@@@", blank]}))
    assert result["status"] == "rejected"
    assert (
        "ghost" in result["reason"]
        and "photo 0: unreadable" in result["reason"]
        and "photo 1: no_face" in result["reason"]
    )
    assert [p["outcome"] for p in result["photos"]] == ["unreadable", "no_face"]
    assert gallery.version == 0 and gallery.people() == []


def _png_of_grey() -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", np.full((200, 200, 3), 128, dtype=np.uint8))
    assert ok
    return buf.tobytes()


def test_upsert_embeddings_checks_model_size_and_values(gallery: Gallery, recognizer: Recognizer) -> None:
    sync = GallerySync(gallery, recognizer)
    good = person(sync, "s1", count=2)
    result = apply(sync, command("upsert", base_version=0, person=good))
    assert (result["status"], result["gallery_version"], result["people"]) == ("ok", 1, 1)
    stored = gallery.embeddings_of("s1")
    assert len(stored) == 2
    assert np.allclose(stored[0]["vector"], good["embeddings"][0]["vector"], atol=1e-6)

    def refused(mutate: Dict[str, Any], words: str) -> None:
        bad = person(sync, "s1", seed=9)
        bad["embeddings"][0].update(mutate)
        out = apply(sync, command("upsert", person=bad))
        assert out["status"] == "rejected" and words in out["reason"], out["reason"]
        assert out["gallery_version"] == 1 and len(gallery.embeddings_of("s1")) == 2

    size = recognizer.embedder.manifest.embedding_size
    refused({"model_id": "arcface-r100"}, f"model id 'arcface-r100', this box runs {recognizer.embedder.model_id!r}")
    refused({"vector": [float("nan")] + unit(size - 1, 1)}, "non-finite")
    refused({"vector": [3.0 * x for x in unit(size, 2)]}, "not unit length")
    refused({"vector": unit(size + 4, 3)}, f"has {size + 4} values")


def test_remove_erases_every_embedding_and_refuses_unknown_people(gallery: Gallery, recognizer: Recognizer) -> None:
    sync = GallerySync(gallery, recognizer)
    assert apply(sync, command("upsert", person=person(sync, "s1", count=3)))["status"] == "ok"
    assert apply(sync, command("upsert", person=person(sync, "s2", seed=5)))["status"] == "ok"
    assert embedding_rows(gallery, "s1") == 3

    result = apply(sync, command("remove", person_id="nobody"))
    assert result["status"] == "rejected" and "no person with id 'nobody'" in result["reason"]
    assert result["gallery_version"] == 2

    result = apply(sync, command("remove", person_id="s1", base_version=2))
    assert (result["status"], result["gallery_version"], result["people"]) == ("ok", 3, 1)
    assert embedding_rows(gallery, "s1") == 0
    assert gallery.db.execute("SELECT COUNT(*) FROM people WHERE person_id = 's1'").fetchone()[0] == 0
    assert embedding_rows(gallery, "s2") == 1


def test_a_stale_base_version_is_a_version_mismatch(gallery: Gallery, recognizer: Recognizer) -> None:
    sync = GallerySync(gallery, recognizer)
    apply(sync, command("upsert", person=person(sync, "s1")))
    result = apply(sync, command("upsert", base_version=0, person=person(sync, "s2")))
    assert result["status"] == "version_mismatch"
    assert "version 0" in result["reason"] and "version 1" in result["reason"]
    result = apply(sync, command("remove", base_version=7, person_id="s1"))
    assert result["status"] == "version_mismatch" and result["gallery_version"] == 1
    assert [p.person_id for p in gallery.people()] == ["s1"]


def test_sync_replaces_the_gallery_or_changes_nothing(gallery: Gallery, recognizer: Recognizer, data: Path) -> None:
    sync = GallerySync(gallery, recognizer)
    apply(sync, command("upsert", person=person(sync, "old", seed=1, count=2)))

    bad = person(sync, "b", seed=3)
    bad["embeddings"][0]["model_id"] = "other-model"
    result = apply(sync, command("sync", people=[person(sync, "a", seed=2), bad]))
    assert result["status"] == "rejected" and "'b'" in result["reason"]
    assert [p.person_id for p in gallery.people()] == ["old"] and gallery.version == 1

    twice = apply(sync, command("sync", people=[person(sync, "a"), person(sync, "a", seed=4)]))
    assert twice["status"] == "rejected" and "twice" in twice["reason"]

    photo = {"person_id": "obama", "name": "Barack Obama", "photos": [b64(data / "hamilton" / "obama.jpg")]}
    result = apply(sync, command("sync", base_version=99, people=[person(sync, "a", seed=2), photo]))
    assert (result["status"], result["gallery_version"], result["people"]) == ("ok", 2, 2), result["reason"]
    assert result["photos"] == [
        {"person_id": "obama", "index": 0, "outcome": "enrolled", "quality": result["photos"][0]["quality"]}
    ]
    assert [p.person_id for p in gallery.people()] == ["a", "obama"]
    assert embedding_rows(gallery, "old") == 0

    empty = apply(sync, command("sync", people=[]))
    assert (empty["status"], empty["people"]) == ("ok", 0)
    assert gallery.db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == 0


def test_a_command_breaking_the_schema_is_rejected_not_raised(gallery: Gallery, recognizer: Recognizer) -> None:
    sync = GallerySync(gallery, recognizer)
    result = sync.apply({"schema": "edge.gallery_command/1", "request_id": "x", "op": "upsert"})
    validate("edge.gallery_result/1", result)
    assert result["status"] == "rejected" and "person" in result["reason"]
    result = sync.apply({"op": 5})  # type: ignore[dict-item]
    validate("edge.gallery_result/1", result)
    assert result["status"] == "rejected" and result["request_id"] is None and result["op"] is None
