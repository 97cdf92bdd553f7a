"""A deployment where the regulator's private key never reaches the operator's server.

The regulator runs ``sandbox regulator init`` on a machine of their own: the key stays there;
the public folder (public key, signature over the shipped policy set) is what the server
reads. The server starts with the policy set the regulator signed, holds no regulator key
after any of it, refuses whatever would need that key (with what to do instead) and refuses
to start with a regulator's private key in its home. The regulator approves a high-tier job
through the API with ``sandbox regulator approve``: the signature is made on their machine,
over a statement built there; a server statement for other code is not signed."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from policies.facts import EngineerFacts, OperatorFacts
from policies.policyset import DEFAULT_POLICY_DIR, hash_files, policy_files
from sandbox import identity
from sandbox.cli import app
from sandbox.config import load_settings
from sandbox.governance import Governance, get_governance
from sandbox.protocol.jobspec import JobSpec
from sandbox.protocol.warrant import approval_statement, note_sha256
from sandbox.services import jobs as job_service
from sandbox.services import principals as principal_service
from tests.api.conftest import PURPOSE, join_census
from tests.conftest import isolated_home
from tests.support.serving import serving

REGULATOR = "regulator"


@dataclass
class Offline:
    key_file: Path
    public_file: Path
    home: Path
    api: str
    gov: Governance


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def regulator_init(machine: Path) -> tuple[Path, Path]:
    code, output = cli("regulator", "init", "--key-file", str(machine / "regulator.key"),
                       "--public-dir", str(machine / "public"))  # fmt: skip
    assert code == 0, output
    return machine / "regulator.key", machine / "public" / "regulator.pub"


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Offline]:
    root = tmp_path_factory.mktemp("offline")
    key_file, public_file = regulator_init(root / "regulators-machine")
    home = root / "server"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SANDBOX_REGULATOR_PUBLIC_KEY_FILE", str(public_file))
        with isolated_home(home) as settings, serving(settings) as api:
            gov = get_governance(settings)
            for company in ("construction", "wholesale-trade"):
                join_census(gov, settings, company)
            principal_service.register_principal(
                gov, OperatorFacts("operator"), "eve", "engineer",
                identity.public_b64(identity.generate_key()),
            )  # fmt: skip
            yield Offline(key_file, public_file, home, api, gov)


def awaiting(offline: Offline) -> str:
    spec = {"purpose": PURPOSE, "companies": ["construction", "wholesale-trade"], "rounds": 2,
            "local_epochs": 1, "min_participants": 2, "privacy": {"dp": {"epsilon": 2.0}}}  # fmt: skip
    filed = job_service.file_job(offline.gov, JobSpec.model_validate(spec), EngineerFacts("eve"))
    assert filed.job.status == "awaiting_approval", filed.reasons
    return filed.job.id


def test_the_key_stays_on_the_regulators_machine(offline: Offline) -> None:
    assert stat.S_IMODE(offline.key_file.stat().st_mode) == 0o600
    key = identity.read_private_key(offline.key_file)
    assert offline.gov.regulator_public_key == identity.public_b64(key)
    shipped = hash_files(policy_files(DEFAULT_POLICY_DIR))
    assert offline.gov.pdp.active_hash == shipped  # the set the regulator signed, active
    assert not list(offline.home.rglob("regulator.key"))
    # The server's own keys (the simulated companies' node folders aside): the operator's.
    kept = sorted(p.name for p in (offline.home / "keys").iterdir())
    assert all(name.startswith("operator") for name in kept), kept


def test_what_needs_the_key_is_refused_with_what_to_do(offline: Offline) -> None:
    job = awaiting(offline)
    code, output = cli("job", "approve", job, "--as", REGULATOR)
    assert code == 1 and "on the regulator's own machine" in output, output
    code, output = cli("principal", "add", "reg-2", "--role", "regulator",
                       "--public-key", identity.public_b64(identity.generate_key()))  # fmt: skip
    assert code == 1 and "endorsing a regulator's key" in output, output
    code, output = cli("policy", "sign")
    assert code == 1 and "signing a policy set" in output, output
    assert not list(offline.home.rglob("regulator.key"))
    assert job_service.store_job(offline.gov, job).status == "awaiting_approval"


def test_the_regulator_approves_from_their_machine(offline: Offline) -> None:
    job = awaiting(offline)
    code, listed = cli("regulator", "approvals", "--api", offline.api,
                       "--key-file", str(offline.key_file))  # fmt: skip
    assert code == 0 and job in listed, listed
    code, output = cli("regulator", "approve", job, "--api", offline.api,
                       "--key-file", str(offline.key_file), "--note", "checked offline")  # fmt: skip
    assert code == 0, output
    stored = job_service.store_job(offline.gov, job)
    assert stored.status == "approved" and stored.approved_by == REGULATOR
    approval = json.loads(stored.warrant or "{}")["approval"]  # what every node checks
    statement = approval_statement(job, stored.spec_hash, stored.bundle_hash or "", REGULATOR,
                                   approval["time"], note_sha256("checked offline"))  # fmt: skip
    assert identity.verify(offline.gov.regulator_public_key, statement, approval["signature"])
    assert not list(offline.home.rglob("regulator.key"))


def test_a_statement_for_other_code_is_not_signed(offline: Offline) -> None:
    job = awaiting(offline)
    code, output = cli("regulator", "approve", job, "--api", offline.api,
                       "--key-file", str(offline.key_file), "--code-bundle", "0" * 64)  # fmt: skip
    assert code == 1 and "nothing signed" in output, output
    assert job_service.store_job(offline.gov, job).status == "awaiting_approval"
    code, output = cli("regulator", "reject", job, "--api", offline.api,
                       "--key-file", str(offline.key_file), "--reason", "not this code")  # fmt: skip
    assert code == 0, output
    assert job_service.store_job(offline.gov, job).status == "rejected"


def test_a_further_regulator_is_endorsed_on_the_regulators_machine(
    offline: Offline, tmp_path: Path
) -> None:
    anna = identity.public_b64(identity.generate_key())
    code, output = cli("regulator", "endorse", "reg-anna", "--public-key", anna,
                       "--key-file", str(offline.key_file))  # fmt: skip
    assert code == 0, output
    record = json.loads(output)
    forged_key = tmp_path / "forged.key"
    identity.write_private_key(forged_key, identity.generate_key())
    forged = json.loads(cli("regulator", "endorse", "reg-anna", "--public-key", anna,
                            "--key-file", str(forged_key))[1])  # fmt: skip
    other = identity.public_b64(identity.generate_key())
    # A forged signature; an endorsement moved onto another key; one for another regulator.
    for body, key, wrong in (
        (forged, anna, "not signed by the installation's regulator key"),
        ({**record, "public_key": other}, other, "not signed by the installation's"),
        ({**record, "principal": "reg-bob"}, anna, "not for regulator reg-anna"),
        ({"role": "regulator"}, anna, "not a key record"),
    ):
        file = tmp_path / "endorsement.json"
        file.write_text(json.dumps(body))
        code, output = cli("principal", "add", "reg-anna", "--role", "regulator",
                           "--public-key", key, "--endorsement", str(file))  # fmt: skip
        assert code == 1 and wrong in output, (wrong, output)
    file = tmp_path / "endorsement.json"
    file.write_text(json.dumps(record))
    code, output = cli("principal", "add", "reg-anna", "--role", "regulator",
                       "--public-key", anna, "--endorsement", str(file))  # fmt: skip
    assert code == 0, output
    [stored] = [p for p in principal_service.list_principals(offline.gov, OperatorFacts(
        "operator")) if p.id == "reg-anna"]  # fmt: skip
    assert stored.endorsement == record


def server_reading(public_file: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment of a server at ``home`` that reads the regulator's public folder."""
    monkeypatch.setenv("SANDBOX_REGULATOR_PUBLIC_KEY_FILE", str(public_file))
    monkeypatch.setenv("SANDBOX_HOME", str(home))
    monkeypatch.setenv("SANDBOX_DATABASE_URL", f"sqlite:///{home / 'sandbox.db'}")


def test_a_server_with_a_regulator_key_in_its_home_does_not_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, public_file = regulator_init(tmp_path / "machine")
    home = tmp_path / "server"
    identity.sandbox_key(home / "keys", "regulator")  # a key left over in the server's home
    server_reading(public_file, home, monkeypatch)
    with pytest.raises(ValueError, match="belongs on the regulator's machine"):
        Governance(load_settings())


def test_a_server_without_the_regulators_signature_does_not_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, public_file = regulator_init(tmp_path / "machine")
    for signature in (public_file.parent / "signatures").iterdir():
        signature.unlink()
    server_reading(public_file, tmp_path / "server", monkeypatch)
    with pytest.raises(ValueError, match="needs the regulator's signature"):
        Governance(load_settings())


def test_a_forged_signature_in_the_public_folder_activates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, public_file = regulator_init(tmp_path / "machine")
    [signature] = list((public_file.parent / "signatures").iterdir())
    forged = identity.generate_key()  # not the regulator's key
    from policies.activation import signing_message

    signature.write_text(identity.sign(forged, signing_message(signature.stem)) + "\n")
    server_reading(public_file, tmp_path / "server", monkeypatch)
    gov = Governance(load_settings())
    assert gov.pdp.active is None  # nothing active: every decision is deny
    assert json.dumps([r.activated for r in gov.activations]) == "[false]"


def test_a_statement_for_another_job_or_time_is_not_signed() -> None:
    from sandbox.cli.regulator import statement_to_sign
    from sandbox.protocol.jobspec import JobSpec

    spec = JobSpec.model_validate({"purpose": PURPOSE, "companies": ["a", "b"]})
    job = {"id": "job-000000000002", "spec": spec.model_dump(mode="json"),
           "spec_hash": spec.spec_hash}  # fmt: skip
    offered = approval_statement("job-000000000002", spec.spec_hash, "b" * 64, REGULATOR,
                                 "2026-12-07T09:00:00Z", note_sha256("")).decode()  # fmt: skip
    with pytest.raises(ValueError, match="not job-000000000001"):
        statement_to_sign("job-000000000001", job, offered, REGULATOR, "", "b" * 64,
                          "2026-12-07T09:00:00Z")  # fmt: skip
    with pytest.raises(ValueError, match="nothing signed"):  # the server's time, not ours
        statement_to_sign("job-000000000002", job, offered, REGULATOR, "", "b" * 64,
                          "2026-12-07T09:00:05Z")  # fmt: skip
    assert statement_to_sign("job-000000000002", job, offered, REGULATOR, "", "b" * 64,
                             "2026-12-07T09:00:00Z") == offered.encode()  # fmt: skip
