"""The real models on real faces: enrollment, identification, open-set unknowns, ORL rank-1, bad files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edge.cli import main
from edge.config import Config
from edge.detect import FaceDetector
from edge.embed import Embedder
from edge.enroll import PhotoOutcome, enroll_person
from edge.gallery.store import Gallery
from edge.images import read_image
from edge.recognize import Recognizer


@pytest.fixture(scope="module")
def recognizer() -> Iterator[Recognizer]:
    config = Config()
    with FaceDetector(config.detector) as detector:
        yield Recognizer(detector, Embedder(num_threads=2), config.quality)


def identify(recognizer: Recognizer, gallery: Gallery, photo: Path) -> List[object]:
    image = read_image(photo)
    index = gallery.index(recognizer.embedder.model_id)
    return [index.match(o.embedding, Config().matcher) for o in recognizer.analyze(image) if o.embedding is not None]


def test_obama_is_named_and_strangers_are_unknown(tmp_path: Path, data: Path, recognizer: Recognizer) -> None:
    ham = data / "hamilton"
    with Gallery(tmp_path / "g.db") as gallery:
        result = enroll_person(gallery, recognizer, "obama", "Barack Obama", [ham / "obama.jpg"])
        assert result.written and result.photos[0].outcome is PhotoOutcome.ENROLLED
        [match] = identify(recognizer, gallery, ham / "obama2.jpg")
        assert match.person_id == "obama"  # type: ignore[attr-defined]
        [biden] = identify(recognizer, gallery, ham / "biden.jpg")
        assert biden.person_id is None  # type: ignore[attr-defined]
        both = identify(recognizer, gallery, ham / "two_people.jpg")
        assert len(both) == 2
        assert sorted(str(m.person_id) for m in both) == ["None", "obama"]  # type: ignore[attr-defined]


def test_orl_rank1(tmp_path: Path, data: Path, recognizer: Recognizer) -> None:
    orl = data / "orl" / "att_faces"
    subjects = sorted((p for p in orl.iterdir() if p.is_dir()), key=lambda p: int(p.name[1:]))
    assert len(subjects) == 40
    with Gallery(tmp_path / "g.db") as gallery:
        for subject in subjects:
            photos = [subject / f"{k}.pgm" for k in range(1, 6)]
            assert enroll_person(gallery, recognizer, subject.name, subject.name, photos).written
        index = gallery.index(recognizer.embedder.model_id)
        hits, total = 0, 0
        for subject in subjects:
            for k in range(6, 11):
                observations = [o for o in recognizer.analyze(read_image(subject / f"{k}.pgm"), gate=False)]
                total += 1
                if observations and observations[0].embedding is not None:
                    scores = index.person_scores(observations[0].embedding)
                    hits += index.people[int(np.argmax(scores))] == subject.name
    rank1 = hits / total
    print(f"ORL rank-1: {rank1:.4f} ({hits}/{total})")
    assert rank1 >= 0.98


def make_bad_files(folder: Path, data: Path) -> List[Path]:
    folder.mkdir()
    files = {
        "empty.jpg": b"",
        "text.jpg": b"hello, I am not a picture\n" * 10,
        "truncated.jpg": (data / "hamilton" / "obama.jpg").read_bytes()[:600],
    }
    for name, content in files.items():
        (folder / name).write_bytes(content)
    cv2.imwrite(str(folder / "noface.png"), np.full((240, 320, 3), 127, dtype=np.uint8))
    # 20000x20000 pixels in a few hundred kilobytes: a decompression bomb
    cv2.imwrite(str(folder / "huge.png"), np.zeros((20000, 20000), dtype=np.uint8))
    return sorted(folder.iterdir())


def test_bad_files_get_per_file_errors_and_leave_the_gallery_unchanged(tmp_path: Path, data: Path) -> None:
    db = tmp_path / "edge.db"
    runner = CliRunner()
    good = runner.invoke(main, ["--db", str(db), "enroll", "--person-id", "obama", str(data / "hamilton/obama.jpg")])
    assert good.exit_code == 0, good.output
    before = json.loads(runner.invoke(main, ["--db", str(db), "gallery", "list", "--json"]).output)
    bad = make_bad_files(tmp_path / "bad", data)
    result = runner.invoke(main, ["--db", str(db), "enroll", "--person-id", "mallory", *map(str, bad)])
    assert result.exit_code == 1
    out = result.output
    assert "empty.jpg (" in out and "empty file" in out
    assert "not a readable image" in out
    assert "huge.png: 20000x20000 is over the 64 megapixel limit" in out  # refused from its header, not decoded
    assert "no_face" in out and "noface.png" in out
    assert "mallory: NOT written" in out
    assert "Traceback" not in out
    after = json.loads(runner.invoke(main, ["--db", str(db), "gallery", "list", "--json"]).output)
    assert after == before
    ident = runner.invoke(main, ["--db", str(db), "identify", *map(str, bad)])
    assert ident.exit_code == 1 and "4 of 5 photos could not be read" in ident.output


def test_the_installed_command_identifies(tmp_path: Path, data: Path) -> None:
    edge = shutil.which("edge", path=str(Path(sys.executable).parent))
    assert edge, "the `edge` entry point is not installed in this environment"
    db = str(tmp_path / "edge.db")
    ham = data / "hamilton"
    subprocess.run(
        [edge, "--db", db, "enroll", "--person-id", "obama", "--name", "Barack Obama", str(ham / "obama.jpg")],
        check=True,
        capture_output=True,
    )
    out = subprocess.run(
        [edge, "--db", db, "identify", "--json", str(ham / "obama2.jpg"), str(ham / "biden.jpg")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    reports = [json.loads(line) for line in out.splitlines()]
    assert [f["person_id"] for f in reports[0]["faces"]] == ["obama"]
    assert [f["person_id"] for f in reports[1]["faces"]] == [None]
    assert reports[0]["faces"][0]["candidates"][0]["person_id"] == "obama"
