"""Gallery commands from the central server against a real gallery file and the real models on real photos."""

from __future__ import annotations

import base64
import itertools
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List

import numpy as np
import pytest
from support import CentralKeys

from edge.config import Config
from edge.detect import FaceDetector
from edge.embed import Embedder
from edge.gallery.store import Gallery
from edge.gallery.sync import GallerySync
from edge.mqtt.contract import validate
from edge.mqtt.signing import CommandVerifier, load_public_keys, sign_command
from edge.recognize import Recognizer

BOX = "school-1/box-17"
REQUEST_IDS = itertools.count(1)


@pytest.fixture(scope="module")
def recognizer() -> Iterator[Recognizer]:
    config = Config()
    with FaceDetector(config.detector) as detector:
        yield Recognizer(detector, Embedder(num_threads=2), config.quality)


@pytest.fixture()
def gallery(tmp_path: Path) -> Iterator[Gallery]:
    with Gallery(tmp_path / "gallery.db") as g:
        yield g


class Box(GallerySync):
    """The box's GallerySync trusting `keys`, with the keys at hand to sign commands for it (see apply())."""

    def __init__(self, gallery: Gallery, recognizer: Recognizer, keys: CentralKeys) -> None:
        super().__init__(gallery, recognizer, keys.verifier(BOX))
        self.keys = keys


@pytest.fixture()
def sync(gallery: Gallery, recognizer: Recognizer, central_keys: CentralKeys) -> Box:
    return Box(gallery, recognizer, central_keys)


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def unit(size: int, seed: int) -> List[float]:
    vec = np.random.default_rng(seed).normal(size=size)
    return [float(x) for x in vec / np.linalg.norm(vec)]


def command(op: str, **body: Any) -> Dict[str, Any]:
    return {"schema": "edge.gallery_command/1", "request_id": f"r-{op}-{next(REQUEST_IDS)}", "op": op, **body}


def person(sync: GallerySync, person_id: str, seed: int = 0, count: int = 1) -> Dict[str, Any]:
    size = sync.recognizer.embedder.manifest.embedding_size
    embeddings = [{"model_id": sync.model_id, "vector": unit(size, seed + k)} for k in range(count)]
    return {"person_id": person_id, "name": person_id.title(), "embeddings": embeddings}


def apply(sync: Box, cmd: Dict[str, Any]) -> Dict[str, Any]:
    """Sign `cmd` as the central does for this box, apply it, check the result."""
    result = sync.apply(sync.keys.sign(cmd, BOX))
    validate("edge.gallery_result/1", result)
    assert result["request_id"] == cmd.get("request_id") and result["op"] == cmd.get("op")
    return result


def embedding_rows(gallery: Gallery, person_id: str) -> int:
    return int(gallery.db.execute("SELECT COUNT(*) FROM embeddings WHERE person_id = ?", [person_id]).fetchone()[0])


def test_upsert_photos_reports_each_photo_and_skips_the_corrupt_one(
    gallery: Gallery, sync: Box, recognizer: Recognizer, data: Path
) -> None:
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


def test_several_photos_synced_get_their_fused_template_as_edge_enroll_gives(
    gallery: Gallery, sync: Box, recognizer: Recognizer, data: Path
) -> None:
    """A person pushed with several photos is matched against their fused template too (as `edge enroll` stores
    it), not only against each photo."""
    from edge.enroll import TEMPLATE_SOURCE, enroll_person

    photos = sorted((data / "hamilton" / "knn_examples" / "train" / "obama").iterdir()) + [data / "hamilton/biden.jpg"]
    result = apply(sync, command("upsert", person={"person_id": "obama", "photos": [b64(p) for p in photos]}))
    assert result["status"] == "ok", result["reason"]
    synced = {row["source"]: np.asarray(row["vector"]) for row in gallery.embeddings_of("obama")}
    assert sorted(synced) == ["central:photo 0", "central:photo 1", "central:photo 2", TEMPLATE_SOURCE]
    # Biden's photo is unlike the two others: kept as a photo, left out of the template (as edge enroll does)
    assert float(np.dot(synced[TEMPLATE_SOURCE], synced["central:photo 2"])) < 0.35
    enroll_person(gallery, recognizer, "obama-local", "Obama", photos)
    local = {row["source"]: np.asarray(row["vector"]) for row in gallery.embeddings_of("obama-local")}
    assert float(np.dot(synced[TEMPLATE_SOURCE], local[TEMPLATE_SOURCE])) > 0.999


def test_upsert_photos_without_a_usable_face_writes_nothing(
    gallery: Gallery, sync: Box, recognizer: Recognizer
) -> None:
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


def test_upsert_embeddings_checks_model_size_and_values(gallery: Gallery, sync: Box, recognizer: Recognizer) -> None:
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


def test_remove_erases_every_embedding_and_refuses_unknown_people(
    gallery: Gallery, sync: Box, recognizer: Recognizer
) -> None:
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


def test_a_stale_base_version_is_a_version_mismatch(gallery: Gallery, sync: Box, recognizer: Recognizer) -> None:
    apply(sync, command("upsert", person=person(sync, "s1")))
    result = apply(sync, command("upsert", base_version=0, person=person(sync, "s2")))
    assert result["status"] == "version_mismatch"
    assert "version 0" in result["reason"] and "version 1" in result["reason"]
    result = apply(sync, command("remove", base_version=7, person_id="s1"))
    assert result["status"] == "version_mismatch" and result["gallery_version"] == 1
    assert [p.person_id for p in gallery.people()] == ["s1"]


def test_sync_replaces_the_gallery_or_changes_nothing(
    gallery: Gallery, sync: Box, recognizer: Recognizer, data: Path
) -> None:
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


def test_a_command_breaking_the_schema_is_rejected_not_raised(
    gallery: Gallery, sync: Box, recognizer: Recognizer
) -> None:
    result = sync.apply(sync.keys.sign({"schema": "edge.gallery_command/1", "request_id": "x", "op": "upsert"}, BOX))
    validate("edge.gallery_result/1", result)
    assert result["status"] == "rejected" and "person" in result["reason"]
    result = sync.apply({"op": 5})  # type: ignore[dict-item]
    validate("edge.gallery_result/1", result)
    assert result["status"] == "rejected" and result["request_id"] is None and result["op"] is None


# the trust boundary: only the central's signed, current, new commands for this box ---------------------------------
def test_only_a_command_signed_by_the_central_for_this_box_and_valid_now_is_applied(
    gallery: Gallery, sync: Box, tmp_path: Path
) -> None:
    from edge.mqtt.signing import generate_keys, load_private_key

    generate_keys(tmp_path / "other.key", tmp_path / "other.pub")
    intruder = load_private_key(tmp_path / "other.key")
    now = datetime.now(timezone.utc)
    good = command("upsert", person=person(sync, "s1"))
    tampered = sync.keys.sign(good, BOX)
    tampered["person"] = person(sync, "mallory", seed=7)
    forged = sign_command(good, intruder, BOX, 60)
    cases = {
        "unsigned": ({**good}, "not signed"),
        "tampered after signing": (tampered, "does not verify"),
        "signed by another key": (forged, "does not verify"),
        "for another box": (sync.keys.sign(good, "school-1/box-18"), "for device 'school-1/box-18'"),
        "expired": (sign_command(good, sync.keys.private_key, BOX, 60, now - timedelta(seconds=61)), "expired"),
        "from the future": (
            sign_command(good, sync.keys.private_key, BOX, 600, now + timedelta(seconds=400)),
            "future",
        ),
        "valid too long": (_long_lived(sync, good), "lifetime"),
        "bad signature text": ({**sync.keys.sign(good, BOX), "signature": "!" * 88}, "not base64"),
    }
    for name, (cmd, words) in cases.items():
        result = sync.apply(cmd)
        validate("edge.gallery_result/1", result)
        assert result["status"] == "rejected" and words in result["reason"], (name, result["reason"])
    assert gallery.version == 0 and gallery.people() == []
    assert apply(sync, good)["status"] == "ok"  # the genuine one, still unused, goes through
    assert [p.person_id for p in gallery.people()] == ["s1"]


def _long_lived(sync: Box, cmd: Dict[str, Any]) -> Dict[str, Any]:
    """A command valid for 25 h, signed with the right key (sign_command itself refuses to make one)."""
    import base64 as b64_

    from edge.mqtt.signing import canonical_bytes, format_time

    now = datetime.now(timezone.utc)
    body = {**cmd, "device": BOX, "issued_at": format_time(now), "expires_at": format_time(now + timedelta(hours=25))}
    body["signature"] = b64_.b64encode(sync.keys.private_key.sign(canonical_bytes(body))).decode()
    return body


def test_a_box_without_a_central_key_refuses_every_command(
    gallery: Gallery, recognizer: Recognizer, central_keys: CentralKeys
) -> None:
    keyless = GallerySync(gallery, recognizer, None)
    result = keyless.apply(central_keys.sign(command("remove", person_id="s1"), BOX))
    validate("edge.gallery_result/1", result)
    assert result["status"] == "rejected" and "no central key configured" in result["reason"]


def test_a_repeated_command_is_refused_even_after_a_restart(
    gallery: Gallery, sync: Box, recognizer: Recognizer, tmp_path: Path
) -> None:
    signed = sync.keys.sign(command("upsert", person=person(sync, "s1")), BOX)
    assert sync.apply(signed)["status"] == "ok"
    removal = sync.keys.sign(command("remove", person_id="s1"), BOX)
    assert sync.apply(removal)["status"] == "ok"
    again = sync.apply(signed)  # a replay (or a retained copy, or a QoS 1 duplicate) of the enrollment
    assert again["status"] == "rejected" and "handled before" in again["reason"]
    assert gallery.people() == [] and gallery.version == 2
    with Gallery(tmp_path / "gallery.db") as reopened:  # the ids live in the gallery database: a restart keeps them
        box = Box(reopened, recognizer, sync.keys)
        assert box.apply(signed)["status"] == "rejected" and reopened.people() == []


def test_request_ids_are_kept_until_a_day_after_their_expiry(gallery: Gallery) -> None:
    from edge.gallery.command_log import CommandLog

    log = CommandLog(gallery.db.conn)
    now = datetime.now(timezone.utc)
    assert log.record("old", now - timedelta(hours=25), now) and log.record("recent", now - timedelta(hours=23), now)
    assert not log.record("recent", now + timedelta(minutes=1), now)
    assert log.record("new", now + timedelta(seconds=30), now)
    assert len(log) == 2  # "old" expired more than a day ago: dropped


def test_during_a_key_rotation_the_box_accepts_the_old_and_the_new_key(
    gallery: Gallery, recognizer: Recognizer, central_keys: CentralKeys, tmp_path: Path
) -> None:
    from support import CentralKeys as Keys

    new = Keys(tmp_path / "new")
    both = tmp_path / "central-keys.pem"
    both.write_bytes(central_keys.public_file.read_bytes() + new.public_file.read_bytes())
    box = GallerySync(gallery, recognizer, CommandVerifier(load_public_keys(both), BOX))
    old_signed = central_keys.sign(command("upsert", person=person(box, "s1")), BOX)
    new_signed = new.sign(command("upsert", person=person(box, "s2")), BOX)
    assert box.apply(old_signed)["status"] == "ok" and box.apply(new_signed)["status"] == "ok"
    only_new = GallerySync(gallery, recognizer, new.verifier(BOX))  # the old key removed: its commands are refused
    assert only_new.apply(central_keys.sign(command("remove", person_id="s1"), BOX))["status"] == "rejected"
