"""Schemathesis over the generated OpenAPI schema: no request, valid or not, gets a 5xx (bounded examples)."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")
pytest.importorskip("faiss", reason="the serve extra is not installed")
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402

from tests.serve_helpers import API_KEY, serve_run_fixture  # noqa: E402

#: Examples per operation: enough to reach each error path, few enough to keep the test near 10 s.
EXAMPLES = 6


@pytest.fixture(scope="session")
def serve_run(tmp_path_factory):
    return serve_run_fixture(tmp_path_factory)


#: (generation mode, send the key, fix path ids to a known user / item so the calls reach past the 404)
VARIANTS = {"positive": ("positive", True, False), "negative": ("negative", True, False),
            "known-ids": ("positive", True, True), "no-key": ("positive", False, False)}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_no_server_errors(serve_run, tmp_path, variant):
    from schemathesis import GenerationMode

    from coldstart_serve.app import create_app

    mode, with_key, known = VARIANTS[variant]
    app = create_app(serve_run, db=tmp_path / "serve.db", api_key=API_KEY)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    headers = {"X-API-Key": API_KEY} if with_key else {}
    failures, calls = [], 0
    for result in schema.get_all_operations():
        operation = result.ok()
        ids = {p.name: ("0" if p.name == "user_id" else "1") for p in operation.path_parameters}
        if known and not ids:
            continue
        strategy = operation.as_strategy(GenerationMode(mode), path_parameters=ids if known else None)

        @given(case=strategy)
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            nonlocal calls
            response = case.call(headers=headers)
            calls += 1
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}")

        try:
            check()
        except Unsatisfiable:  # negative mode on an operation without inputs: nothing to break
            continue
    assert calls >= 5
    assert not failures, "\n".join(failures[:10])
