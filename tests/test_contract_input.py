"""Incoming messages are read without trusting them: nesting, numbers, and errors that do not repeat the payload."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict

import pytest

from edge.jsoncheck import MAX_DEPTH, describe, load_json, nesting_depth, strict_validator
from edge.mqtt.contract import MessageError, parse, validate

LIMIT = 4 * 1024 * 1024


@pytest.mark.parametrize("topic_schema", ["edge.ack/1", "edge.gallery_command/1"])
@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_deeply_nested_json_is_refused_without_recursion(topic_schema: str, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    raw = (opener * 100_000 + "1" + closer * 100_000).encode()
    with pytest.raises(MessageError, match=r"JSON nested 100000 levels deep, more than 32"):
        parse(topic_schema, raw, LIMIT)


def test_nesting_is_counted_outside_strings_only() -> None:
    text = json.dumps({"a": [[1, 2], {"b": '[[[[{{{{\\"]]'}]})
    assert nesting_depth(text.encode()) == 3
    assert nesting_depth(b'"just a string with [ and {"') == 0
    nested = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert json.loads(nested) == parse_value(nested)


def parse_value(text: str) -> object:
    from edge.jsoncheck import load_json

    return load_json(text.encode())


def test_a_four_megabyte_message_is_scanned_quickly() -> None:
    photo = "A" * (LIMIT - 200)
    raw = json.dumps({"schema": "edge.gallery_command/1", "request_id": "r", "op": "upsert", "x": photo}).encode()
    started = time.perf_counter()
    assert nesting_depth(raw) == 1
    assert nesting_depth(b"[]" * (LIMIT // 2)) == 1
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    "body, reason",
    [
        ('{"schema": "edge.ack/1", "up_to_seq": NaN}', "NaN"),
        ('{"schema": "edge.ack/1", "up_to_seq": Infinity}', "Infinity"),
        ('{"schema": "edge.ack/1", "up_to_seq": -Infinity}', "-Infinity"),
        ('{"schema": "edge.ack/1", "up_to_seq": 1e400}', "too large"),
        ('{"schema": "edge.ack/1", "up_to_seq": ' + "9" * 5000 + "}", "too many digits"),
    ],
)
def test_non_finite_and_oversized_numbers_are_refused(body: str, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        parse("edge.ack/1", body.encode(), LIMIT)


ACK_LIKE = {
    "type": "object",
    "required": ["up_to_seq"],
    "additionalProperties": False,
    "properties": {
        "up_to_seq": {"type": "integer", "minimum": 0},
        "seqs": {"type": "array", "items": {"type": "integer", "minimum": 1}},
    },
}


def first_error(schema: Dict[str, Any], raw: bytes) -> str:
    """What contract.validate says about `raw` under `schema` (the box's schemas change under other work)."""
    errors = sorted(strict_validator(schema).iter_errors(load_json(raw)), key=lambda e: [str(p) for p in e.path])
    return describe(errors[0]) if errors else "valid"


@pytest.mark.parametrize("number", ["1e300", "5.0", "1.5"])
def test_a_json_float_is_not_an_integer(number: str) -> None:
    assert first_error(ACK_LIKE, b'{"up_to_seq": %b}' % number.encode()) == "up_to_seq: must be of type integer"
    assert first_error(ACK_LIKE, b'{"up_to_seq": 0, "seqs": [1, %b]}' % number.encode()) == (
        "seqs/1: must be of type integer"
    )
    assert first_error(ACK_LIKE, b'{"up_to_seq": 7, "seqs": [1, 9007199254740993]}') == "valid"


def test_the_box_schemas_use_json_integers() -> None:
    with pytest.raises(MessageError, match=r"must be of type integer"):
        validate(
            "edge.gallery_command/1",
            {
                "schema": "edge.gallery_command/1",
                "request_id": "r",
                "op": "remove",
                "person_id": "ann",
                "base_version": 1.0,
            },
        )


SECRETS = ["Jane Secret-Name", "0.123456789", "s3cr3t-meta", "hunter2"]


def test_schema_errors_name_the_path_and_rule_never_the_value() -> None:
    ok = [{"model_id": "m", "vector": [0.25] * 16}]
    bad_people = [
        {"person_id": "p1", "name": ["Jane Secret-Name"], "embeddings": ok},
        {"person_id": "p1", "embeddings": [{"model_id": "m", "vector": [0.123456789] * 3}]},
        {"person_id": "p1", "embeddings": [{"model_id": "m", "vector": ["0.123456789"] * 20}]},
        {"person_id": "Jane Secret-Name!", "embeddings": ok},
        {"person_id": "p1", "Jane Secret-Name": "s3cr3t-meta", "embeddings": ok},
        {"person_id": "p1", "metadata": "s3cr3t-meta", "embeddings": ok},
        {"person_id": "p1"},
    ]
    messages = []
    for person in bad_people:
        command = {"schema": "edge.gallery_command/1", "request_id": "r", "op": "upsert", "person": person}
        with pytest.raises(MessageError) as caught:
            validate("edge.gallery_command/1", command)
        messages.append(str(caught.value))
    text = "\n".join(messages)
    assert not [s for s in SECRETS if s in text], text
    assert "person/name: must be of type string" in messages[0]
    assert "person/embeddings/0/vector: must have at least 16 items" in messages[1]
    assert "person/embeddings/0/vector/0: must be of type number" in messages[2]
    assert "person/person_id: must match" in messages[3]
    assert "person: properties not allowed here" in messages[4]
    assert "person/metadata: must be of type object" in messages[5]
    assert "person: matches none (or more than one) of the allowed forms" in messages[6]


def test_a_missing_property_is_named() -> None:
    assert first_error(ACK_LIKE, b'{"seqs": []}') == "(top level): missing required property 'up_to_seq'"


def test_a_password_in_an_unexpected_key_is_not_echoed() -> None:
    raw = json.dumps({"up_to_seq": 1, "password": "hunter2", "Jane Doe": 1}).encode()
    assert first_error(ACK_LIKE, raw) == "(top level): properties not allowed here: password"


def test_the_first_error_is_the_first_by_path() -> None:
    vector = [0.25] * 16
    vector[2] = vector[10] = "x"  # type: ignore[call-overload]
    command = {
        "schema": "edge.gallery_command/1",
        "request_id": "r",
        "op": "upsert",
        "person": {"person_id": "p1", "embeddings": [{"model_id": "m", "vector": vector}]},
    }
    with pytest.raises(MessageError, match=r"person/embeddings/0/vector/2: must be of type number"):
        validate("edge.gallery_command/1", command)


@pytest.mark.parametrize(
    "text, reason", [("[" * 100_000 + "]" * 100_000, "nested 100000 levels deep"), ('{"people": [NaN]}', "NaN")]
)
def test_a_gallery_import_file_is_read_as_carefully(tmp_path: Path, text: str, reason: str) -> None:
    from edge.errors import GalleryError
    from edge.gallery.exchange import read_document

    path = tmp_path / "gallery.json"
    path.write_text(text)
    with pytest.raises(GalleryError, match=f"not valid JSON \\(.*{reason}"):
        read_document(path)
