"""The OpenAPI document driven by schemathesis against a live server on loopback.

Every operation, many generated requests each (bounded): zero 5xx answers, and every answer
conforms to the documented schema (status codes, content types, bodies). Driven through
schemathesis' Python API rather than its pytest plugin, which lags behind pytest 9.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest_serve import live_server
from hypothesis import HealthCheck, given, settings

schemathesis = pytest.importorskip("schemathesis", reason="pip install schemathesis")

from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

from cardamage.serve.app import create_app  # noqa: E402
from cardamage.serve.settings import ServeSettings  # noqa: E402

EXAMPLES = int(os.environ.get("CARDAMAGE_FUZZ_EXAMPLES", "40"))  # `make fuzz` raises it


@pytest.fixture(scope="module")
def api_schema(tiny_model_dir: Path):
    app = create_app(ServeSettings(model=tiny_model_dir, max_files=4, max_upload_mb=1))
    with live_server(app) as server:
        yield schemathesis.openapi.from_url(f"{server.url}/openapi.json")


def test_every_operation_conforms_and_never_fails(api_schema) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /v1/predict", "GET /v1/model"}
    calls = []
    for operation in operations:
        label = operation.label

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case) -> None:
            # OpenAPI cannot say "the bytes must be a photo", so random files are rightly
            # refused (415/422): the positive-data check does not apply to their content
            response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
            calls.append((label, response.status_code))  # noqa: B023 (runs inside the loop)

        check()
    assert len(calls) >= len(operations)
    assert not [c for c in calls if c[1] >= 500]
    print(f"schemathesis: {len(calls)} requests over {len(operations)} operations, no 5xx")
