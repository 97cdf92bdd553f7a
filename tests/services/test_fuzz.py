"""Bad input of every kind the product accepts, fuzzed: manifests, data files, job specs,
policy files and audit bundles. Each is refused with the product's own clear error (never an
unexpected exception) and leaves nothing half-written. API requests are fuzzed by the
schemathesis test of the service."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session, select

from policies.policyset import DEFAULT_POLICY_DIR, LoadedPolicySet, PolicySetError, policy_files
from sandbox.config import Settings
from sandbox.data.byod import load_company_file, load_manifest
from sandbox.data.validation import DataValidationError
from sandbox.errors import SandboxError
from sandbox.governance import get_governance
from sandbox.ledger import BundleError, Ledger, verify_bundle
from sandbox.protocol.jobspec import JobSpec, JobSpecError, parse_job_spec
from sandbox.registry.models import Company, Dataset
from sandbox.services.companies import join
from tests.ledger.helpers import make_record

# ``SANDBOX_FUZZ_EXAMPLES`` raises the count for longer runs (benchmarks/reliability.py).
FUZZ = settings(
    max_examples=int(os.environ.get("SANDBOX_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

GOOD_MANIFEST = {
    "name": "claims",
    "industry": "Finance insurance and real estate",
    "grade": "general",
    "personal_data": True,
    "target": {"name": "fraud", "positive": "yes"},
    "features": [
        {"name": "amount", "kind": "numeric", "transform": "log1p"},
        {"name": "region", "kind": "categorical", "categories": ["north", "south"]},
    ],
}
GOOD_ROWS = "amount,region,fraud\n" + "".join(
    f"{10 + i},{'north' if i % 2 else 'south'},{'yes' if i % 4 == 0 else 'no'}\n" for i in range(30)
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


def mutate_manifest(draw: st.DrawFn) -> dict:  # type: ignore[type-arg]
    manifest = json.loads(json.dumps(GOOD_MANIFEST))
    path = draw(
        st.sampled_from(
            [
                ("name",),
                ("industry",),
                ("grade",),
                ("personal_data",),
                ("target",),
                ("target", "name"),
                ("features",),
                ("features", 0, "kind"),
                ("features", 1, "categories"),
                ("extra",),
            ]
        )
    )
    target = manifest
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = draw(json_values)
    return manifest


@FUZZ
@given(st.data())
def test_fuzzed_manifests_are_refused_with_a_clear_error(tmp_path_factory, data) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("manifest")
    kind = data.draw(st.sampled_from(["structured", "bytes-json", "bytes-toml"]))
    if kind == "structured":
        path = folder / "m.json"
        path.write_text(json.dumps(mutate_manifest(data.draw)))
    else:
        path = folder / ("m.json" if kind == "bytes-json" else "m.toml")
        path.write_bytes(data.draw(st.binary(max_size=300)))
    try:
        manifest = load_manifest(path)
    except DataValidationError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
    else:
        assert manifest.name and manifest.features


@st.composite
def broken_csv(draw: st.DrawFn) -> bytes:
    lines = GOOD_ROWS.splitlines()
    damage = draw(
        st.sampled_from(["row", "cell", "encoding", "huge", "nan", "header", "random", "truncate"])
    )
    rng = random.Random(draw(st.integers(0, 10**6)))
    index = rng.randrange(1, len(lines))
    if damage == "row":
        lines[index] = lines[index] + "," * rng.randrange(1, 4) + "extra"
    elif damage == "cell":
        cells = lines[index].split(",")
        cells[rng.randrange(len(cells))] = draw(
            st.text(max_size=20).filter(lambda t: "\n" not in t and "\r" not in t)
        )
        lines[index] = ",".join(cells)
    elif damage == "huge":
        lines[index] = "x" * 5000 + lines[index]
    elif damage == "nan":
        lines[index] = "NaN" + lines[index][lines[index].index(",") :]
    elif damage == "header":
        lines[0] = draw(st.text(max_size=40).filter(lambda t: "\n" not in t and "\r" not in t))
    elif damage == "truncate":
        lines = lines[: rng.randrange(0, 3)]
    text = "\n".join(lines) + "\n"
    if damage == "encoding":
        return text.encode("utf-16")
    if damage == "random":
        return draw(st.binary(max_size=400))
    return text.encode("utf-8")


_companies = iter(range(10**9))


@FUZZ
@given(broken_csv())
def test_fuzzed_data_files_are_refused_and_leave_nothing(
    sandbox_home: Settings, engine, tmp_path: Path, raw: bytes
) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "rows.csv"
    data.write_bytes(raw)
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(GOOD_MANIFEST))
    company = f"fuzz-{next(_companies)}"
    node_dir = sandbox_home.company_dir(company)
    try:
        table = load_company_file(data, manifest)
    except DataValidationError as exc:
        assert exc.problems and all(str(data) in p for p in exc.problems)
        return
    try:
        join(get_governance(sandbox_home), node_dir, company, company, table, ("fraud-model",))
    except (SandboxError, ValueError):
        with Session(engine) as session:
            assert session.get(Company, company) is None
        assert not node_dir.exists()
        return
    with Session(engine) as session:
        dataset = session.exec(select(Dataset).where(Dataset.company_id == company)).one()
    assert dataset.row_count >= 10 and (node_dir / "vault" / "claims").is_dir()


job_fields = st.fixed_dictionaries(
    {},
    optional={
        "purpose": json_values | st.text(max_size=20),
        "companies": st.lists(st.text(max_size=10), max_size=4) | json_values,
        "rounds": st.integers(-5, 2000) | json_values,
        "learning_rate": st.floats() | json_values,
        "strategy": st.fixed_dictionaries(
            {}, optional={"name": st.text(max_size=12), "proximal_mu": st.floats()}
        )
        | json_values,
        "privacy": st.fixed_dictionaries(
            {}, optional={"dp": json_values, "secure_aggregation": json_values}
        )
        | json_values,
        "min_participants": st.integers(-3, 10),
        "unknown": json_values,
    },
)


@FUZZ
@given(job_fields | json_values)
def test_fuzzed_job_specs_are_refused_field_by_field(raw: object) -> None:
    try:
        spec = parse_job_spec(raw)
    except JobSpecError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
    else:
        assert isinstance(spec, JobSpec) and len(spec.spec_hash) == 64


@FUZZ
@given(st.data())
def test_fuzzed_policy_files_are_refused_or_parse(data) -> None:  # type: ignore[no-untyped-def]
    files = policy_files(DEFAULT_POLICY_DIR)
    name = data.draw(st.sampled_from(sorted(files)))
    original = files[name]
    rng = random.Random(data.draw(st.integers(0, 10**6)))
    damage = data.draw(st.sampled_from(["flip", "cut", "insert", "garbage"]))
    body = bytearray(original)
    if damage == "flip":
        for _ in range(rng.randrange(1, 4)):
            position = rng.randrange(len(body))
            body[position] = rng.randrange(256)
    elif damage == "cut":
        body = body[: rng.randrange(len(body))]
    elif damage == "insert":
        position = rng.randrange(len(body))
        body[position:position] = data.draw(st.binary(min_size=1, max_size=20))
    else:
        body = bytearray(data.draw(st.binary(max_size=200)))
    mutated = {**files, name: bytes(body)}
    try:
        policy_set = LoadedPolicySet.from_files(mutated)
    except PolicySetError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
    else:
        # A change that still parses and validates is a different set (a different hash),
        # which activation accepts only with a regulator's signature (tests/services/test_governance.py).
        assert (policy_set.hash == LoadedPolicySet.from_files(files).hash) == (
            bytes(body) == original
        )


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> tuple[Path, str]:  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from sandbox import identity
    from sandbox.db import get_engine

    folder = tmp_path_factory.mktemp("bundle")
    key = Ed25519PrivateKey.generate()
    ledger = Ledger(
        get_engine(f"sqlite:///{folder / 'l.db'}"),
        key,
        "sandbox.example/ledger",
        folder / "signer.json",
    )
    ledger.append_many([make_record(i) for i in range(40)])
    ledger.checkpoint()
    ledger.append_many([make_record(100 + i) for i in range(5)])
    ledger.export_bundle(folder / "bundle")
    return folder / "bundle", identity.public_b64(key)


@FUZZ
@given(st.data())
def test_fuzzed_audit_bundles_never_verify_when_changed(bundle, tmp_path_factory, data) -> None:  # type: ignore[no-untyped-def]
    source, public_key = bundle
    copy = tmp_path_factory.mktemp("copy") / "bundle"
    shutil.copytree(source, copy)
    # The evidence: the entries, their stored hashes, the signed checkpoints, and the
    # manifest's figures that verification reads. (The manifest's prose, the schema copy and
    # the key copy are documentation; the key that counts is given from outside.)
    evidence = [copy / name for name in ("entries.jsonl", "hashes.jsonl", "checkpoints.jsonl")]
    target = data.draw(st.sampled_from([*evidence, copy / "manifest.json"]))
    rng = random.Random(data.draw(st.integers(0, 10**6)))
    if target.name == "manifest.json":
        manifest = json.loads(target.read_text())
        field = data.draw(
            st.sampled_from(["tree_size", "root_hex", "origin", "entries", "checkpoints"])
        )
        if field == "tree_size":
            manifest["tree_size"] += data.draw(st.sampled_from([-1, 1, 1000]))
        elif field == "root_hex":
            manifest["root_hex"] = "0" * 64
        elif field == "origin":
            manifest["origin"] = "other.example/ledger"
        else:
            manifest["files"][f"{field}.jsonl"]["sha256"] = "f" * 64
        target.write_text(json.dumps(manifest))
        damage = f"manifest {field}"
        body = None
    else:
        body = bytearray(target.read_bytes())
        damage = data.draw(st.sampled_from(["flip", "cut", "insert", "delete-file"]))
    if body is None:
        pass
    elif damage == "delete-file" or not body:
        target.unlink()
    elif damage == "flip":
        position = rng.randrange(len(body))
        body[position] ^= 1 << rng.randrange(8)
        target.write_bytes(bytes(body))
    elif damage == "cut":
        target.write_bytes(bytes(body[: rng.randrange(len(body))]))
    else:
        position = rng.randrange(len(body) + 1)
        body[position:position] = data.draw(st.binary(min_size=1, max_size=16))
        target.write_bytes(bytes(body))
    try:
        report = verify_bundle(copy, public_key)
    except BundleError:
        return
    assert not report.ok, f"{damage} of {target.name} went unnoticed"
    assert report.problems
