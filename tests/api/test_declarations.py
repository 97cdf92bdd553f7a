"""Declared attributes are part of the admission review. The reviewer confirms an
application's industry and personal-data flag (recorded); a confirmation that differs from
the declarations is refused, and the company applies again; a dataset declared non-personal
whose columns look personal (census: age, sex, race, ...) cannot be admitted unconfirmed."""

from __future__ import annotations

import json

from sandbox.data import census
from sandbox.data.manifest import DatasetManifest, personal_looking_columns
from tests.api.conftest import World


def admit(world: World, application: str, body: dict[str, object] | None = None):  # type: ignore[no-untyped-def]
    return world.client.post(f"/applications/{application}/admit",
                             headers=world.headers("operator"), json=body)  # fmt: skip


def test_personal_looking_columns_are_named() -> None:
    flagged = personal_looking_columns(census.manifest_for("Mining"))
    assert {"age", "sex", "race", "marital_stat"} <= set(flagged)
    plain = DatasetManifest.model_validate({
        "name": "parts", "industry": "Mining", "target": {"name": "defect"},
        "features": [{"name": "usage", "kind": "numeric"}, {"name": "page_count", "kind": "numeric"},
                     {"name": "stage", "kind": "numeric"}],
    })  # fmt: skip
    assert personal_looking_columns(plain) == []  # words, not substrings: usage, page, stage


def test_a_dataset_declared_non_personal_with_personal_columns_needs_confirmation(
    world: World,
) -> None:
    application = world.application(personal_data=False)
    unconfirmed = admit(world, application)
    assert unconfirmed.status_code == 422
    assert "declares no personal data, but its columns age" in unconfirmed.text
    relabelled = admit(world, application, {"industry": "Mining", "personal_data": True})
    assert relabelled.status_code == 422 and "holds no personal data" in relabelled.text
    size = world.ledger_size
    confirmed = admit(world, application, {"industry": "Mining", "personal_data": False})
    assert confirmed.status_code == 200, confirmed.text
    [admitted] = [json.loads(e.entry) for e in world.gov.ledger.entries(after_index=size - 1)
                  if json.loads(e.entry)["action"] == "company.admitted"]  # fmt: skip
    assert admitted["details"]["confirmed"] == "industry+personal_data"
    assert admitted["details"]["looks_personal_columns"] >= 4  # a count, never the names


def test_another_industry_than_declared_is_refused(world: World) -> None:
    application = world.application()
    wrong = admit(world, application, {"industry": "Retail trade", "personal_data": True})
    assert wrong.status_code == 422 and "declares the industry 'Mining'" in wrong.text
    assert admit(world, application).status_code == 200  # declared personal: no flag to clear
