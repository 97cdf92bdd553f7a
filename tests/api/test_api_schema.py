"""Property-based tests of the API against its own OpenAPI document (schemathesis).

Every operation gets generated requests, valid and invalid (schemathesis's examples, coverage
and fuzzing phases), as a regulator, the operator, an engineer, a company and without a
token. Whatever comes in: no server error, every status, header and body as the document
says (problem details for errors), bad input refused with a 4xx. The app runs in-process (ASGI); the number of examples
is bounded so that this runs in CI in minutes.

The operations are driven through schemathesis's own test builder, one Hypothesis test per
operation, rather than its pytest plugin (whose lazy loader does not run under pytest 9.2);
every operation is run and every failure reported together.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS
from schemathesis.pytest.lazy import get_all_tests
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.api.conftest import World

# Valid by the schema is not valid by the state: a well-formed job id names no job, a
# well-formed policy set carries no regulator signature. So no check demands that every
# schema-valid request succeeds; every other check runs.
CHECKED = [check for check in CHECKS.get_all() if check is not positive_data_acceptance]
EXAMPLES = settings(
    max_examples=int(os.environ.get("SANDBOX_SCHEMATHESIS_EXAMPLES", "10")),
    deadline=None,
    derandomize=os.environ.get("SANDBOX_SCHEMATHESIS_RANDOM") != "1",
    database=None,
    suppress_health_check=list(HealthCheck),
)
# Invalid input must be refused with a 4xx; a body too large for the server (413) is refused
# before it is read, whatever the document says each field may hold.
CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]
            }
        }
    }
)
PUBLIC = {
    ("GET", "/health"),
    ("POST", "/auth/token"),
    ("POST", "/auth/session"),
    ("POST", "/companies"),
}


def run_every_operation(world: World, check: Callable[[Any], None]) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", world.app, config=CONFIG)
    failures: list[str] = []
    ran = 0
    for result in get_all_tests(schema=schema, test_func=check, settings=EXAMPLES, given_kwargs={}):
        operation, test = result.ok()
        ran += 1
        try:
            test()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # collect, so that one operation does not hide another
            failures.append(f"{operation.label}: {exc}")
    assert ran >= 30
    print(f"schemathesis: {ran} operations")  # how many ran, for the record (pytest -s)
    assert not failures, "\n\n".join(failures)


def test_the_document_names_every_route(world: World) -> None:
    document = world.client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    for path, item in document["paths"].items():
        for method, operation in item.items():
            content = operation["responses"]["403"]["content"]
            assert list(content) == ["application/problem+json"], (method, path)
            if (method.upper(), path) not in PUBLIC:
                assert operation.get("security"), (method, path)


@pytest.mark.parametrize("role", ["regulator", "operator", "engineer", "company"])
def test_as_each_role(world: World, role: str) -> None:
    headers = world.headers(role)

    def check(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=CHECKED)

    run_every_operation(world, check)


def test_without_a_token(world: World) -> None:
    def check(case: Any) -> None:
        response = case.call_and_validate(checks=CHECKED)
        key = (case.method.upper(), case.operation.path)
        if key not in PUBLIC:
            assert response.status_code in (400, 401, 405, 413, 422), (key, response.text)

    run_every_operation(world, check)


@pytest.fixture(autouse=True)
def _no_session_cookie(world: World) -> None:
    world.client.cookies.clear()
