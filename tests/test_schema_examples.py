"""One example payload per JSON Schema (edge/schemas/examples/<name>.json), each valid against its schema, so a
central written from the README and the examples speaks the contract (issue 12: the README's ack example had left
out the required `schema`, and every ack built from it was refused)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from edge.mqtt.contract import SCHEMA_DIR, SCHEMAS, MessageError, validate

EXAMPLES = SCHEMA_DIR / "examples"
README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _example(schema_id: str) -> Path:
    return EXAMPLES / SCHEMAS[schema_id].replace(".schema.json", ".json")


def test_every_schema_has_an_example_and_every_example_a_schema() -> None:
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.schema.json")) == sorted(SCHEMAS.values())
    assert sorted(p.name for p in EXAMPLES.glob("*.json")) == sorted(_example(s).name for s in SCHEMAS)


@pytest.mark.parametrize("schema_id", sorted(SCHEMAS))
def test_the_example_is_valid(schema_id: str) -> None:
    payload = json.loads(_example(schema_id).read_text(encoding="utf-8"))
    validate(schema_id, payload)
    assert payload["schema"] == schema_id


def test_the_readme_ack_example_carries_its_schema() -> None:
    found = re.search(r"`edge\.ack/1`: `(\{[^`]*\})`", README)
    assert found, "the README's topic table shows no ack example"
    example = found.group(1)
    assert '"schema": "edge.ack/1"' in example
    ack = json.loads(example.replace("E", '"3f2a9c0d1e4b5a67"', 1).replace("N", "41").replace("[...]", "[43]")
                     .replace("M", "40"))  # fmt: skip
    validate("edge.ack/1", ack)
    without = {k: v for k, v in ack.items() if k != "schema"}
    with pytest.raises(MessageError):
        validate("edge.ack/1", without)


def test_the_crop_example_is_a_jpeg() -> None:
    crop = json.loads(_example("edge.crop/1").read_text(encoding="utf-8"))
    assert base64.b64decode(crop["jpeg"])[:3] == b"\xff\xd8\xff"
