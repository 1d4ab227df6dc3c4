"""Fuzzing the parsers of external input added with the command and
OpenTelemetry: whatever text arrives, the outcome is the documented one and
never another exception.

* ``--context`` (the command line): a dict, or ``UserError`` with one line.
* ``MODULE:Workflow`` (the command line): a Workflow class, or ``UserError``.
* A run's stored trace context (the database): a span whose parent is the
  context when it is a valid W3C ``traceparent``, else a new root span.
"""

from __future__ import annotations

import json

import pytest
from hephaestus.cli.loading import UserError, load_workflow, parse_context
from hephaestus.runtime.storage.base import RunRow
from hephaestus.telemetry import otel
from hypothesis import given, settings
from hypothesis import strategies as st

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), JSON.map(json.dumps)))
def test_context_text_is_a_dict_or_one_clear_line(text: str) -> None:
    try:
        value = parse_context(text)
    except UserError as error:
        message = str(error)
        assert message.startswith("--context")
        assert "\n" not in message
        return
    assert isinstance(value, dict)
    assert value == json.loads(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_a_workflow_reference_is_a_class_or_a_user_error(reference: str) -> None:
    try:
        found = load_workflow(reference)
    except UserError:
        return
    assert isinstance(found, type)


def row(trace: str | None) -> RunRow:
    return RunRow(
        run_id=1,
        token="t",
        id="fuzz::1",
        workflow="m:W",
        version=1,
        status="running",
        seq=0,
        lease_owner=None,
        lease_expires=None,
        runnable=True,
        created_at=0.0,
        updated_at=0.0,
        trace=trace,
    )


@pytest.mark.skipif(not otel.ENABLED, reason="the [otel] extra is not installed")
@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.none(),
        st.text(),
        JSON.map(json.dumps),
        st.dictionaries(st.sampled_from(["traceparent", "tracestate"]), st.text()).map(json.dumps),
    )
)
def test_any_stored_trace_context_gives_a_span(trace: str | None) -> None:
    traced = otel.run_started(row(trace))
    assert traced is not None
    otel.run_ended(traced, None, "running", None)
