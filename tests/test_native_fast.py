"""The hand-written check of the common native event accepts exactly what the model accepts, the same way.

Whatever ``_fast`` takes must come out of the pydantic model identically; whatever the model refuses
``_fast`` must leave to the model (which then says what is wrong).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from alerts.sources.native import EventProblem, _fast, _one, parse_native

FIELDS = ["integration_id", "error", "status", "integration_name", "provider", "auth_method", "error_code",
          "occurred_at", "account_id", "event_id", "labels", "reauthorize_url", "authorized_by"]

texts = st.one_of(st.text(max_size=30), st.sampled_from(["", "a" * 101, "a" * 201, "x" * 1001, "ok-1", "a.b"]))
values = st.one_of(
    st.none(), texts, st.integers(-3, 3), st.booleans(), st.floats(allow_nan=False),
    st.sampled_from(["failed", "succeeded", "oauth2", "api_key", "basic", "FAILED",
                     "2026-11-28T09:30:00Z", "2026-11-28T09:30:00", "2026-11-28T09:30:00+01:00", "yesterday"]),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=5), st.one_of(st.text(max_size=5), st.integers()), max_size=3),
    st.just({f"k{i}": "v" for i in range(65)}),
)
items = st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), values, max_size=8)
plain = st.fixed_dictionaries(
    {"integration_id": st.text(min_size=1, max_size=20)},
    optional={"error": texts, "status": st.sampled_from(["failed", "succeeded"]), "provider": texts,
              "auth_method": st.sampled_from(["oauth2", "api_key", "basic"]), "event_id": texts,
              "occurred_at": st.sampled_from(["2026-11-28T09:30:00Z", "2026-11-28T09:30:00.5+02:00"]),
              "labels": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3)},
)


def model(item: dict):
    try:
        ev = _one.validate_python(item)
        ev.validate_failure()
    except (ValidationError, ValueError):
        return None
    return ev.to_event("native")


@settings(max_examples=600, deadline=None)
@given(st.one_of(items, plain))
def test_fast_check_agrees_with_the_model(item) -> None:
    fast = _fast(item, "native")
    expected = model(item)
    if fast is not None:
        assert expected is not None, f"fast accepted what the model refuses: {item!r}"
        assert fast == expected
    if expected is None:
        assert fast is None


def test_plain_events_take_the_fast_path_and_others_still_parse() -> None:
    assert _fast({"integration_id": "sf", "error": "invalid_grant"}, "native") is not None
    assert _fast({"integration_id": "sf", "error": "invalid_grant", "occurred_at": 1764322200}, "native") is not None
    batch = parse_native([{"integration_id": "a", "error": "x"}, {"integration_id": "b", "status": "succeeded"}],
                         max_batch=10)
    assert [(e.integration_id, e.status.value) for e in batch] == [("a", "failed"), ("b", "succeeded")]


def test_a_bad_event_in_a_batch_is_named_by_the_model() -> None:
    try:
        parse_native([{"integration_id": "a", "error": "x"}, {"integration_id": "b"}], max_batch=10)
    except EventProblem as exc:
        assert exc.detail.startswith("1.error:") and "required" in exc.detail
    else:
        raise AssertionError("a failure without an error was accepted")
