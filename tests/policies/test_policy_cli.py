"""`sandbox policy check | explain | test | sign`."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from policies.activation import signature_valid
from policies.policyset import policy_set_hash
from sandbox.cli import app
from sandbox.identity import public_b64, read_private_key
from sandbox.registry.policy_sets import PolicyStore

runner = CliRunner()


def run(*args: str, **kwargs):
    return runner.invoke(app, ["policy", *args], **kwargs)


def test_check_lists_the_policies_and_the_hash() -> None:
    result = run("check")
    assert result.exit_code == 0, result.output
    assert "tier.high.secure_aggregation" in result.output
    assert "valid against the schema" in result.output
    assert policy_set_hash(Path("policies")) in result.output.replace("\n", "")


def test_check_fails_on_a_broken_set(policy_copy: Path) -> None:
    (policy_copy / "broken.cedar").write_text("permit (principal, action, resource")
    result = run("check", "--dir", str(policy_copy))
    assert result.exit_code == 1
    assert "broken.cedar does not parse" in result.output


REQUEST = {
    "principal": {"type": "Company", "id": "a", "industry": "Retail trade"},
    "action": "read_audit",
    "resource": {"type": "AuditLog", "id": "ledger"},
    "context": {
        "type": "AuditScope",
        "company": {"type": "Company", "id": "b", "industry": "Retail trade"},
    },
}


def test_explain_says_what_and_why(tmp_path: Path) -> None:
    path = tmp_path / "request.json"
    path.write_text(json.dumps(REQUEST))
    result = run("explain", str(path))
    assert result.exit_code == 0, result.output
    assert "DENY" in result.output
    assert "baseline.company.own_audit_entries" in result.output
    assert "may read only the audit entries about itself" in " ".join(result.output.split())
    as_json = json.loads(run("explain", "--json", str(path)).output)
    assert as_json["allowed"] is False
    assert as_json["policies"] == ["baseline.company.own_audit_entries"]


def test_explain_refuses_a_malformed_request(tmp_path: Path) -> None:
    path = tmp_path / "request.json"
    path.write_text(json.dumps({**REQUEST, "principal": {"type": "Alien", "id": "x"}}))
    result = run("explain", str(path))
    assert result.exit_code == 2 and "unknown fact type" in result.output


def test_test_runs_the_shipped_cases() -> None:
    result = run("test")
    assert result.exit_code == 0, result.output
    assert " 0 failed" in result.output


def test_test_fails_when_a_case_fails(tmp_path: Path) -> None:
    case = {
        "cases": [
            {
                "name": "a company may not export",
                "principal": REQUEST["principal"],
                "action": "export_audit",
                "resource": REQUEST["resource"],
                "context": {},
                "expect": "allow",
                "policies": [],
            }
        ]
    }
    (tmp_path / "wrong.json").write_text(json.dumps(case))
    result = run("test", "--cases", str(tmp_path))
    assert result.exit_code == 1
    assert "0 passed, 1 failed" in result.output


def test_sign_files_a_regulator_signature(tmp_path: Path) -> None:
    result = run("sign", "--home", str(tmp_path))
    assert result.exit_code == 0, result.output
    digest = policy_set_hash(Path("policies"))
    signature = PolicyStore(tmp_path / "policy").signature_for(digest)
    key = read_private_key(tmp_path / "keys" / "regulator.key")
    assert signature_valid(digest, signature, public_b64(key))
