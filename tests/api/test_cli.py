"""The CLI's side of the API, as the README uses it: registering principals, issuing and
signing for tokens, preparing a company's node and its signed join, another dataset."""

from __future__ import annotations

import json
from pathlib import Path

from starlette.testclient import TestClient
from typer.testing import CliRunner

from sandbox.api import create_app
from sandbox.cli import app
from sandbox.config import Settings
from sandbox.data import census

runner = CliRunner()


def run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def company_files(tmp_path: Path, name: str, rows: int = 80) -> tuple[Path, Path]:
    data, manifest = tmp_path / f"{name}.csv", tmp_path / f"{name}.json"
    census.industry_frame("Construction", rows=rows, seed=4).to_csv(data, index=False)
    document = census.manifest_for("Construction").model_dump(mode="json", exclude_none=True)
    document["name"] = name
    manifest.write_text(json.dumps(document))
    return data, manifest


def test_the_readme_flows(sandbox_home: Settings, tmp_path: Path) -> None:
    client = TestClient(create_app(sandbox_home, run_capacity=0))

    key = tmp_path / "eve.pem"
    assert "registered" in run(
        "principal", "add", "eve", "--role", "engineer", "--new-key", str(key)
    )
    assert "eve" in run("principal", "list")

    issued = run("token", "issue", "eve", "--role", "engineer").strip().splitlines()[-1]
    me = client.get("/auth/tokens", headers={"Authorization": f"Bearer {issued}"})
    assert me.status_code == 200 and me.json()["principal_id"] == "eve"

    body = json.loads(
        run("token", "sign-request", "--key", str(key), "--id", "eve", "--role", "engineer")
    )
    signed = client.post("/auth/token", json=body)
    assert signed.status_code == 201, signed.text

    data, manifest = company_files(tmp_path, "census")
    out = tmp_path / "join.json"
    header = run(
        "company",
        "join-request",
        "acme",
        "--data",
        str(data),
        "--manifest",
        str(manifest),
        "--purpose",
        "fraud-model",
        "--out",
        str(out),
    ).strip()
    name, _, signature = header.partition(": ")
    assert name == "X-Sandbox-Signature"
    joined = client.post(
        "/companies",
        content=out.read_bytes(),
        headers={"Content-Type": "application/json", name: signature},
    )
    assert joined.status_code == 202, joined.text
    assert joined.json()["consents"][0]["purpose"] == "fraud-model"
    # The operator reviews the application and admits it.
    listed = run("company", "applications", "--as", "operator")
    application = next(w for w in listed.split() if w.startswith("app-"))
    assert "Construction" in listed and "yes" in listed  # the declarations under review
    wrong = CliRunner().invoke(app, ["company", "admit", application, "--industry", "Mining",
                                     "--personal-data", "--as", "operator"])  # fmt: skip
    assert wrong.exit_code == 1 and "declares the industry 'Construction'" in wrong.output
    assert "acme admitted" in run("company", "admit", application, "--industry", "Construction",
                                  "--personal-data", "--as", "operator")  # fmt: skip

    company_key = sandbox_home.company_dir("acme") / "keys" / "company.key"
    acme = client.post(
        "/auth/token",
        json=json.loads(
            run(
                "token",
                "sign-request",
                "--key",
                str(company_key),
                "--id",
                "acme",
                "--role",
                "company",
            )
        ),
    ).json()["token"]
    data2, manifest2 = company_files(tmp_path, "claims_2025", rows=50)
    path = run(
        "company", "prepare-dataset", "acme", "--data", str(data2), "--manifest", str(manifest2)
    ).strip()
    registered = client.post(
        "/companies/acme/datasets",
        content=Path(path).read_bytes(),
        headers={"Authorization": f"Bearer {acme}", "Content-Type": "application/json"},
    )
    assert registered.status_code == 201, registered.text
    assert registered.json()["row_count"] == 50

    token_id = me.json()["token_id"]
    run("token", "revoke", token_id)
    assert (
        client.get("/auth/tokens", headers={"Authorization": f"Bearer {issued}"}).status_code == 401
    )
    assert "disabled" in run("principal", "disable", "eve")
    refused = runner.invoke(app, ["token", "issue", "eve", "--role", "engineer"])
    assert refused.exit_code == 1 and "not active" in refused.output


def test_acting_as_someone_who_is_not_registered_is_refused(sandbox_home: Settings) -> None:
    """``--as`` names a registered principal or company (or the installation's default of
    the command's role): an unknown id is refused before anything is decided or recorded."""
    from sandbox.governance import get_governance

    size = get_governance(sandbox_home).ledger.size
    for args in (["audit", "entries", "--as", "ghost"], ["company", "list", "--as", "ghost"],
                 ["company", "applications", "--as", "regulat0r"]):  # fmt: skip
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert "no registered principal or company has this id" in result.output
    assert get_governance(sandbox_home).ledger.size == size
    assert runner.invoke(app, ["company", "list", "--as", "regulator"]).exit_code == 0


def test_a_refused_registration_leaves_no_private_key_behind(
    sandbox_home: Settings, tmp_path: Path
) -> None:
    for args, why in (
        (["--organisation", "bad org!"], "organisation"),
        ([], "taken"),  # "operator" is the installation's own id
    ):
        key = tmp_path / f"key-{len(args)}.pem"
        principal = "operator" if not args else "dana"
        result = runner.invoke(
            app, ["principal", "add", principal, "--role", "engineer", "--new-key", str(key), *args]
        )
        assert result.exit_code == 1 and why in result.output, result.output
        assert not key.exists()
    key = tmp_path / "dana.pem"
    run("principal", "add", "dana", "--role", "engineer", "--new-key", str(key))
    assert key.exists() and key.stat().st_mode & 0o777 == 0o600


def test_the_installation_regulator_has_one_name_in_every_face(sandbox_home: Settings) -> None:
    """`--as regulator` (reports, approvals) and `sandbox token issue regulator` name the same
    principal: the installation's regulator, whose key is the sandbox's regulator key."""
    client = TestClient(create_app(sandbox_home, run_capacity=0))
    token = run("token", "issue", "regulator", "--role", "regulator").split()[-1]
    assert token.startswith("sbx_")
    me = client.get("/auth/tokens", headers={"Authorization": f"Bearer {token}"}).json()
    assert me["principal_id"] == "regulator" and me["role"] == "regulator"
    queue = client.get("/approvals", headers={"Authorization": f"Bearer {token}"})
    assert queue.status_code == 200
    assert runner.invoke(app, ["company", "list", "--as", "regulator"]).exit_code == 0
