"""Fuzzing the HTTP API from its own OpenAPI schema: no request, however malformed, gets a 5xx.

Every POST endpoint gets bodies that Schemathesis generates from the served `openapi.json`
(fitting it and breaking it), bodies that Hypothesis builds from the same JSON schema with odd
values (huge strings, unusual code points, empty and long lists, nesting, nulls, missing and extra
fields), and raw bytes (invalid UTF-8, truncated JSON, other content types). Each 4xx must carry
the app's JSON `{"error": ...}` message; after all of it the replica must still predict.

Bounded: `EXAMPLES` per endpoint and generator, derandomized so a run is repeatable; a failure
prints the shrunk example (and its curl command for the Schemathesis cases).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

pytestmark = pytest.mark.slow

POST_PATHS = ("/v1/predict", "/v1/explain", "/v1/feedback")
EXAMPLES = 150
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # nothing written to the working directory
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
TIMEOUT_S = 30

# -- odd values ------------------------------------------------------------------------------------
ODD_TEXTS = [
    "",
    " ",
    "\t\n\r",
    "\x00",
    "a\x00b",
    "\u200b",  # zero-width space
    "\ufeff",  # byte order mark
    "\u202eevil",  # right-to-left override
    "e\u0301",  # combining accent
    "\ufdfa",  # one code point, 18 in NFKC
    "\uffff",  # a noncharacter
    "\U0010ffff",  # the last code point
    "\U0001f600" * 10,
    "𝕳𝖊𝖑𝖑𝖔 ｗｏｒｌｄ",
    "null",
    "{}",
    "[]",
    "0",
]
# Any code point but the surrogates (which `requests` cannot encode as UTF-8).
CHARS = st.characters(exclude_categories=("Cs",))
HUGE_TEXT = st.builds(  # around the limit of 2000 characters, and far past it
    lambda chars, n: (chars * n)[:n],
    st.sampled_from(["x", "ab ", "é", "\U0001f600 "]),
    st.sampled_from([1999, 2000, 2001, 5000, 200_000]),
)
TEXT = st.one_of(st.text(CHARS, max_size=40), st.sampled_from(ODD_TEXTS), HUGE_TEXT)
SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 2**31, 2**63, -(2**64), 10**30]),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
JSON_VALUE = st.recursive(
    SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(CHARS, max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)


def _lists(items: st.SearchStrategy) -> st.SearchStrategy[list]:
    """Empty, short, around the limit of 64 items, and far past it."""
    return st.one_of(
        st.just([]),
        st.lists(items, min_size=1, max_size=5),
        st.lists(st.sampled_from(["spam", "ham"]), min_size=63, max_size=66),
        st.builds(lambda n: ["hello"] * n, st.sampled_from([1000, 20_000])),
    )


# -- strategies from the served JSON schema --------------------------------------------------------
def _resolve(spec: dict, schema: dict) -> dict:
    while "$ref" in schema:
        node: Any = spec
        for key in schema["$ref"].removeprefix("#/").split("/"):
            node = node[key]
        schema = node
    return schema


def _shaped(spec: dict, schema: dict, depth: int = 0) -> st.SearchStrategy:
    """Values of the schema's shape (its types), filled with odd content."""
    schema = _resolve(spec, schema)
    if depth > 3:
        return JSON_VALUE
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of([_shaped(spec, s, depth + 1) for s in schema[key]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"]) | TEXT
    kind = schema.get("type")
    if kind == "string":
        return TEXT
    if kind == "integer":
        return st.integers() | st.sampled_from([0, -1, 2**63, 10**30])
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return _lists(_shaped(spec, schema.get("items", {}), depth + 1))
    if kind == "object" or "properties" in schema:
        values = schema.get("additionalProperties")
        if "properties" not in schema and isinstance(values, dict):
            return st.dictionaries(TEXT, _shaped(spec, values, depth + 1), max_size=4)
        return _object(spec, schema, depth)
    return JSON_VALUE


def _object(spec: dict, schema: dict, depth: int) -> st.SearchStrategy[dict]:
    props = schema.get("properties", {})
    required = [name for name in schema.get("required", []) if name in props]
    fields = {name: _shaped(spec, s, depth + 1) for name, s in props.items()}
    return st.fixed_dictionaries(
        {name: fields[name] for name in required},
        optional={name: s for name, s in fields.items() if name not in required},
    )


def body_strategy(spec: dict, path: str) -> st.SearchStrategy:
    """The POST body of `path`: well-shaped, broken field by field, or not an object at all."""
    content = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    schema = _resolve(spec, content["schema"])
    names = list(schema.get("properties", {}))
    shaped = _object(spec, schema, 0)
    wrong_types = st.fixed_dictionaries({}, optional={name: JSON_VALUE for name in names})
    extra = st.tuples(shaped, st.text(CHARS, min_size=1, max_size=10), JSON_VALUE).map(
        lambda t: {**t[0], t[1]: t[2]}
    )
    nested = st.builds(
        lambda n: {name: _nest(n) for name in names}, st.sampled_from([10, 100, 900])
    )
    top_level = st.one_of(st.none(), SCALAR, st.lists(JSON_VALUE, max_size=3))
    return st.one_of(shaped, wrong_types, extra, nested, top_level)


def _nest(depth: int) -> Any:
    value: Any = "hello"
    for i in range(depth):
        value = [value] if i % 2 else {"text": value}
    return value


# -- raw bytes -------------------------------------------------------------------------------------
VALID = {
    "/v1/predict": {"inputs": ["hello there"]},
    "/v1/explain": {"inputs": ["hello there"]},
    "/v1/feedback": {"input": "hello there", "prediction": "ham", "label": "spam"},
}
RAW_BODIES = [
    b"",
    b"\xff\xfe\xfd",
    b'{"inputs": ["\xc3\x28"]}',  # invalid UTF-8 inside a string
    b'{"inputs": ["\xed\xa0\x80"]}',  # a UTF-8-encoded surrogate
    b'{"inputs": ["\\ud800"]}',  # a lone surrogate as a JSON escape
    b'{"input": "\\udfff", "prediction": "ham", "label": "spam"}',
    b'{"inputs": [NaN]}',
    b'{"inputs": ["a"], "inputs": 1}',
    b"[" * 100_000 + b"]" * 100_000,
    b"\x00" * 64,
    b'\xef\xbb\xbf{"inputs": ["hello"]}',  # UTF-8 byte order mark
    '{"inputs": ["hello"]}'.encode("utf-16"),
    '{"inputs": ["hello"]}'.encode("utf-32"),
    b'{"inputs": ["' + b"x" * 5_000_000 + b'"]}',
]
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=latin-1",
    "application/merge-patch+json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "application/octet-stream",
    "",
    None,  # no content-type header
]


def raw_strategy(path: str) -> st.SearchStrategy[bytes]:
    valid = json.dumps(VALID[path]).encode()
    truncated = st.integers(0, len(valid) - 1).map(lambda n: valid[:n])
    return st.one_of(st.sampled_from(RAW_BODIES), truncated, st.binary(max_size=200))


# -- checks ----------------------------------------------------------------------------------------
def check(response: requests.Response, what: str) -> None:
    status = response.status_code
    text = response.text[:800]
    assert status < 500, f"{status} for {what}; answer: {text}"
    if status < 400:
        return
    try:
        body = response.json()
    except ValueError:
        pytest.fail(f"{status} without a JSON body for {what}\n  answer: {text!r}")
    assert isinstance(body, dict), f"{status} for {what}: not a JSON object: {text}"
    assert isinstance(body.get("error"), str), f"{status} without an 'error' for {what}: {text}"


def _short(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


@pytest.fixture(scope="module")
def api(deployed):
    """The base URL, the served OpenAPI document, Schemathesis's view of it and one session."""
    service, _ = deployed
    base = service.url.rstrip("/")
    spec = requests.get(f"{base}/openapi.json", timeout=TIMEOUT_S).json()
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json", timeout=TIMEOUT_S)
    with requests.Session() as session:
        yield base, spec, schema, session


def test_the_schema_lists_the_post_endpoints(api):
    _, spec, _, _ = api
    for path in POST_PATHS:
        assert "post" in spec["paths"][path], path


@pytest.mark.parametrize("path", POST_PATHS)
def test_schemathesis_cases_get_no_5xx(api, path):
    base, _, schema, session = api
    operation = schema[path]["POST"]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @FUZZ
    @given(case=cases)
    def fuzz(case):
        response = case.call(base_url=base, session=session, timeout=TIMEOUT_S)
        what = f"{case.as_curl_command()[:600]}\n  body: {_short(case.body)}"
        check(response, what)

    fuzz()


@pytest.mark.parametrize("path", POST_PATHS)
def test_schema_shaped_odd_bodies_get_no_5xx(api, path):
    base, spec, _, session = api

    @FUZZ
    @given(body=body_strategy(spec, path))
    def fuzz(body):
        response = session.post(base + path, json=body, timeout=TIMEOUT_S)
        check(response, f"POST {path} json={_short(body)}")

    fuzz()


@pytest.mark.parametrize("path", POST_PATHS)
def test_raw_bodies_get_no_5xx(api, path):
    base, _, _, session = api

    @FUZZ
    @given(data=raw_strategy(path), content_type=st.sampled_from(CONTENT_TYPES))
    def fuzz(data, content_type):
        headers = {} if content_type is None else {"Content-Type": content_type}
        response = session.post(base + path, data=data, headers=headers, timeout=TIMEOUT_S)
        check(response, f"POST {path} content-type={content_type!r} data={_short(data)}")

    fuzz()


@pytest.mark.parametrize("path", POST_PATHS)
def test_listed_raw_bodies_get_no_5xx(api, path):
    """Each listed body with each content type, all of them, the failures listed together."""
    base, _, _, session = api
    failures = []
    for data in RAW_BODIES:
        for content_type in CONTENT_TYPES:
            headers = {} if content_type is None else {"Content-Type": content_type}
            response = session.post(base + path, data=data, headers=headers, timeout=TIMEOUT_S)
            try:
                check(response, f"content-type={content_type!r} data={_short(data, 80)}")
            except (AssertionError, pytest.fail.Exception) as exc:
                failures.append(str(exc).splitlines()[0])
    assert not failures, f"POST {path}:\n" + "\n".join(failures)


def test_unknown_routes_and_methods_answer_404_and_405(api):
    """Not the app's routes: FastAPI's own `{"detail": ...}` answers them, still never a 5xx."""
    base, _, _, session = api
    unknown = session.post(f"{base}/v1/nope", json={"inputs": ["hello"]}, timeout=TIMEOUT_S)
    assert unknown.status_code == 404, unknown.text
    assert isinstance(unknown.json().get("detail"), str), unknown.text
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        reply = session.request(method, f"{base}/v1/predict", timeout=TIMEOUT_S)
        assert reply.status_code == 405, f"{method}: {reply.status_code} {reply.text}"
        assert isinstance(reply.json().get("detail"), str), reply.text


def test_still_serving_after_the_fuzzing(api):
    base, _, _, session = api
    for path in ("/healthz", "/readyz"):
        assert session.get(base + path, timeout=TIMEOUT_S).status_code == 200, path
    reply = session.post(f"{base}/v1/predict", json={"inputs": ["hello there"]}, timeout=TIMEOUT_S)
    assert reply.status_code == 200, reply.text
    assert len(reply.json()["predictions"]) == 1
