"""Fuzzing every worker and admin route (hypothesis): whatever a client sends, the answer is never a 5xx.

The routes are read from the server's own tables (`server.worker._ROUTES` and the JSON
API's router), so a route added later is fuzzed too. Bodies are random JSON (NUL
characters, integers far beyond 64 bits, deep nesting, wrong types), often shaped like the
route's own model so they reach its checks; path parameters are random text and numbers;
the artifact upload gets random query strings and X-Zeroloop-Meta headers.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from tests.server.conftest import Served
from zeroloop.pipeline import jobs
from zeroloop.remote import wire
from zeroloop.server import json_api, worker

EXAMPLES = 40  # per route group and backend: bounded, yet thousands of requests in all

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["\x00", "a\x00b", "x" * 5000, "selfplay", "w1", "0" * 64, "SELFPLAY_COMPLETE", "running"])
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=25,
)


def shaped(model: type[BaseModel] | None) -> st.SearchStrategy[Any]:
    """A body like `model`'s (its field names, random values, some left out) or any JSON at all."""
    if model is None:
        return json_values
    fields = {name: json_values for name in model.model_fields}
    return st.one_of(json_values, st.fixed_dictionaries({}, optional=fields))


path_parameters = st.one_of(
    st.text(min_size=1, max_size=60),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["1", "w1", "0" * 64, "tic_tac_toe_2p", "%00", ".."]),
)

WORKER_ROUTES = [(declared.method, declared.path, declared.body) for declared in worker._ROUTES]
ADMIN_ROUTES = [
    (method, route.path, None)
    for route in json_api.router.routes
    for method in sorted(getattr(route, "methods", set()) - {"HEAD"})
]


def _fill(template: str, values: list[str], node: str | None = None) -> str:
    names = re.findall(r"\{(\w+)\}", template)
    filled = template
    for name, value in zip(names, values, strict=False):
        chosen = node if name == "node" and node is not None else value
        filled = filled.replace("{" + name + "}", quote(chosen, safe=""), 1)
    return filled


@pytest.fixture
def busy(served: Served) -> Served:
    """The server with a job leased to w1, so job routes reach more than 404."""
    served.app.queue.enqueue(jobs.SELFPLAY, "tic_tac_toe_2p", {"games": 1})
    assert served.client.post(f"{wire.API}/w1/jobs/claim", json={}, headers=Served.auth(served.worker)).is_success
    return served


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_worker_route_answers_a_5xx(busy: Served, data: st.DataObject) -> None:
    method, template, model = data.draw(st.sampled_from(WORKER_ROUTES))
    values = data.draw(st.lists(path_parameters, min_size=3, max_size=3))
    node = data.draw(st.sampled_from(["w1", "w1", "w1", None]))
    path = f"{wire.API}{_fill(template, values, node)}"
    body = data.draw(shaped(model))
    token = data.draw(st.sampled_from([busy.worker, busy.worker, busy.admin, "zl_0123456789ab_" + "x" * 43, "junk"]))
    answer = busy.client.request(method, path, json=body, headers=Served.auth(token))
    assert answer.status_code < 500, (method, path, body, answer.text)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sha=st.one_of(st.just("0" * 64), st.text(min_size=1, max_size=70)),
    query=st.dictionaries(
        st.sampled_from(["kind", "config_key", "producer_job_id", "other"]),
        st.one_of(st.text(max_size=30), st.integers(-(2**70), 2**70).map(str), st.just("1"), st.just("game_batch")),
    ),
    meta=st.one_of(  # what a header can carry: printable ASCII (JSON escapes the rest),
        st.none(),  # with no space at either end (HTTP trims it; the client refuses to send it)
        json_values.map(json.dumps),
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=200).map(str.strip),
    ),
    content=st.binary(max_size=200),
)
def test_no_upload_answers_a_5xx(
    busy: Served, sha: str, query: dict[str, str], meta: str | None, content: bytes
) -> None:
    headers = Served.auth(busy.worker)
    if meta is not None:
        headers[wire.META_HEADER] = meta
    path = f"{wire.API}/w1/artifacts/{quote(sha, safe='')}"
    answer = busy.client.put(path, params=query, content=content, headers=headers)
    assert answer.status_code < 500, (path, query, meta, answer.text)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_admin_route_answers_a_5xx(busy: Served, data: st.DataObject) -> None:
    method, template, _model = data.draw(st.sampled_from(ADMIN_ROUTES))
    values = data.draw(st.lists(path_parameters, min_size=2, max_size=2))
    path = _fill(template, values)
    params = data.draw(
        st.dictionaries(
            st.sampled_from(["config", "limit", "type"]),
            st.one_of(st.text(max_size=20), st.integers(-(2**70), 2**70).map(str)),
        )
    )
    body = data.draw(shaped(json_api.QuarantineBody))
    token = data.draw(st.sampled_from([busy.admin, busy.viewer, busy.worker]))
    answer = busy.client.request(method, path, params=params, json=body, headers=Served.auth(token))
    assert answer.status_code < 500, (method, path, params, body, answer.text)
