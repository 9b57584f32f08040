"""Strict JSON limits at their edges (R3.2): depth 32 and 10,000 values pass, one more does not."""

from __future__ import annotations

import json

import pytest

from alerts.sources.envelope import MAX_DEPTH, MAX_VALUES, BadPayload, decode_json


def nested(depth: int) -> bytes:
    return b"[" * (depth - 1) + b"{}" + b"]" * (depth - 1)


def test_depth_limit_is_exact() -> None:
    assert decode_json(nested(MAX_DEPTH)) is not None
    with pytest.raises(BadPayload, match="deeper than 32"):
        decode_json(nested(MAX_DEPTH + 1))
    with pytest.raises(BadPayload, match="deeper than 32"):
        decode_json(b'{"a": ' * MAX_DEPTH + b"1" + b"}" * MAX_DEPTH)  # objects count as levels too


def test_value_limit_counts_scalars_and_containers() -> None:
    # the array itself plus its items: MAX_VALUES values in all
    assert len(decode_json(json.dumps(list(range(MAX_VALUES - 1))).encode())) == MAX_VALUES - 1
    with pytest.raises(BadPayload, match="more than 10000"):
        decode_json(json.dumps(list(range(MAX_VALUES))).encode())
    # objects of scalars: 1 array + 2,000 objects + 4,000 values = 6,001; two more objects' worth fails
    events = [{"integration_id": f"i{i}", "error": "e"} for i in range(2000)]
    assert len(decode_json(json.dumps(events).encode())) == 2000
    with pytest.raises(BadPayload, match="more than 10000"):
        decode_json(json.dumps(events + events[:1400]).encode())


def test_scalars_and_duplicates() -> None:
    assert decode_json(b"\xef\xbb\xbf 42") == 42
    with pytest.raises(BadPayload, match="duplicate key 'a'"):
        decode_json(b'[{"b": 1}, {"a": 1, "b": 2, "a": 3}]')


@pytest.mark.parametrize("body", [b'{"a": 1e400}', b'{"a": -1e400}', b"[1.5e309]", b'{"a": NaN}', b'{"a": Infinity}'])
def test_numbers_beyond_a_float_are_refused(body: bytes) -> None:
    with pytest.raises(BadPayload):
        decode_json(body)


def test_an_overflowing_number_gets_400_and_stores_nothing(client) -> None:
    r = client.post("/v1/events", content=b'{"integration_id": "sf", "error": "invalid_grant", "n": 1e400}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem+json")
    assert client.get("/v1/alerts").json()["alerts"] == []
