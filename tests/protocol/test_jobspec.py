"""Job specs: validated field by field; the filed hash depends on content only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandbox.protocol.jobspec import JobSpec, JobSpecError, load_job_spec, parse_job_spec


def test_hash_is_canonical() -> None:
    a = parse_job_spec({"purpose": "p", "companies": ["a", "b"], "rounds": 3})
    b = parse_job_spec({"rounds": 3, "companies": ["a", "b"], "purpose": "p"})
    assert a.spec_hash == b.spec_hash
    assert (
        a.spec_hash
        != parse_job_spec({"purpose": "p", "companies": ["a", "b"], "rounds": 4}).spec_hash
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"companies": ["a"]}, "purpose: Field required"),
        ({"purpose": "p", "companies": []}, "companies: Tuple should have at least 1 item"),
        ({"purpose": "p", "companies": ["a", "a"]}, "companies are named twice: a"),
        (
            {"purpose": "p", "companies": ["a"], "rounds": 0},
            "rounds: Input should be greater than or equal to 1",
        ),
        ({"purpose": "p", "companies": ["a"], "strategy": {"name": "magic"}}, "strategy.name"),
        (
            {"purpose": "p", "companies": ["a"], "strategy": {"name": "fedprox"}},
            "fedprox needs proximal_mu > 0",
        ),
        ({"purpose": "p", "companies": ["a"], "min_participants": 2}, "exceeds the 1 companies"),
        (
            {"purpose": "p", "companies": ["a"], "shell": "rm -rf /"},
            "shell: Extra inputs are not permitted",
        ),
        ({"purpose": "bad purpose!", "companies": ["a"]}, "purpose: 'bad purpose!' must start"),
        # Strict types: a number is a number, a flag a flag.
        ({"purpose": "p", "companies": ["a"], "rounds": True}, "rounds: Input should be a valid"),
        ({"purpose": "p", "companies": ["a"], "rounds": "3"}, "rounds: Input should be a valid"),
        (
            {"purpose": "p", "companies": ["a"], "privacy": {"dp": {"epsilon": "3"}}},
            "privacy.dp.epsilon: Input should be a valid number",
        ),
        (
            {"purpose": "p", "companies": ["a"], "privacy": {"secure_aggregation": 1}},
            "privacy.secure_aggregation: Input should be a valid boolean",
        ),
        # Sensible bounds.
        (
            {"purpose": "p", "companies": ["a"], "privacy": {"dp": {"epsilon": 1e-300}}},
            "privacy.dp.epsilon: Input should be greater than or equal to 0.01",
        ),
        (
            {"purpose": "p", "companies": ["a"], "privacy": {"max_update_norm": 1e308}},
            "privacy.max_update_norm: Input should be less than or equal to 10000",
        ),
        (
            {
                "purpose": "p",
                "companies": ["a"],
                "privacy": {"dp": {"epsilon": 3, "delta": 1e-300}},
            },
            "privacy.dp.delta: Input should be greater than or equal to 0.000000000001",
        ),
        ([1, 2], "must be a table/object"),
    ],
)
def test_bad_specs_name_the_field(raw: object, expected: str) -> None:
    with pytest.raises(JobSpecError) as info:
        parse_job_spec(raw)
    assert expected in str(info.value)


def test_spec_files(tmp_path: Path) -> None:
    toml = tmp_path / "job.toml"
    toml.write_text(
        'purpose = "p"\ncompanies = ["a", "b"]\n[strategy]\nname = "fedprox"\nproximal_mu = 0.1\n'
    )
    spec = load_job_spec(toml)
    assert isinstance(spec, JobSpec) and spec.strategy.proximal_mu == 0.1
    js = tmp_path / "job.json"
    js.write_text(json.dumps(spec.model_dump(mode="json")))
    assert load_job_spec(js).spec_hash == spec.spec_hash
    broken = tmp_path / "broken.toml"
    broken.write_text("purpose = ")
    with pytest.raises(JobSpecError, match="is not valid toml"):
        load_job_spec(broken)
    with pytest.raises(JobSpecError, match="does not exist"):
        load_job_spec(tmp_path / "missing.toml")
    with pytest.raises(JobSpecError, match=r"must be a \.toml or \.json"):
        yaml = tmp_path / "job.yaml"
        yaml.write_text("purpose: p")
        load_job_spec(yaml)


def test_a_dp_spec_takes_the_dp_training_defaults_it_leaves_unset() -> None:
    plain = JobSpec(purpose="p", companies=("a", "b"))
    dp = JobSpec.model_validate(
        {"purpose": "p", "companies": ["a", "b"], "privacy": {"dp": {"epsilon": 8}}}
    )
    assert (plain.rounds, plain.batch_size, plain.learning_rate) == (40, 64, 0.05)
    assert (dp.rounds, dp.local_epochs, dp.batch_size, dp.learning_rate) == (20, 2, 512, 2.0)
    assert dp.privacy.dp is not None and dp.privacy.dp.max_grad_norm == 3.0
    chosen = JobSpec.model_validate(
        {"purpose": "p", "companies": ["a", "b"], "rounds": 7, "privacy": {"dp": {"epsilon": 8}}}
    )
    assert chosen.rounds == 7 and chosen.batch_size == 512
    # The filled-in values are part of what is filed and hashed.
    assert JobSpec.model_validate(dp.model_dump()).spec_hash == dp.spec_hash


def test_the_effective_settings_say_where_each_comes_from() -> None:
    from sandbox.protocol.jobspec import effective_settings

    raw = {"purpose": "p", "companies": ["a", "b"], "rounds": 7,
           "privacy": {"dp": {"epsilon": 3.0}}}  # fmt: skip
    shown = {name: (value, source) for name, value, source in
             effective_settings(raw, parse_job_spec(raw))}  # fmt: skip
    assert shown["rounds"] == (7, "your spec")
    assert shown["learning_rate"] == (2.0, "default under DP")
    assert shown["batch_size"] == (512, "default under DP")
    assert shown["dataset"] == ("census", "default")
    plain = {"purpose": "p", "companies": ["a", "b"]}
    shown = {n: s for n, _, s in effective_settings(plain, parse_job_spec(plain))}
    assert shown["learning_rate"] == "default"
