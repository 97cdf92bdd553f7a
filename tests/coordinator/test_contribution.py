"""Contribution of each company: Shapley arithmetic, the estimator's plumbing, and the
estimate against exact Shapley values of retraining every coalition on real census data."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from flwr.app import MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.contribution import Setting, experiment
from coordinator.contribution import (
    ContributionSettings,
    ContributionUnavailable,
    RoundGame,
    UpdateStore,
    Weights,
    all_coalitions,
    estimate_contributions,
    exact_shapley,
    fedavg,
    guided_permutations,
    leave_one_out,
    permutation_shapley,
    shares,
)
from sandbox.protocol.messages import to_array_record, unstack_models


# ------------------------------------------------------------- Shapley arithmetic
def test_an_additive_game_gives_each_player_its_own_worth() -> None:
    worth = {"a": 3.0, "b": -1.0, "c": 0.5, "d": 0.0}
    values = exact_shapley(list(worth), lambda s: sum(worth[p] for p in s) + 10.0)
    assert values == pytest.approx(worth)
    assert leave_one_out(list(worth), lambda s: sum(worth[p] for p in s)) == pytest.approx(worth)


def test_the_textbook_glove_game() -> None:
    # One left glove (l), two right gloves (r1, r2): a pair is worth 1.
    def value(s: frozenset[str]) -> float:
        return float("l" in s and bool(s & {"r1", "r2"}))

    assert exact_shapley(["l", "r1", "r2"], value) == pytest.approx(
        {"l": 2 / 3, "r1": 1 / 6, "r2": 1 / 6}
    )


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 5), st.integers(0, 2**32 - 1))
def test_exact_shapley_is_efficient_symmetric_and_ignores_null_players(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    players = [f"p{i}" for i in range(n)]
    table = {c: float(rng.normal()) for c in all_coalitions(players)}
    # A null player: joins without changing any coalition's worth.
    null = "zero"

    def value(s: frozenset[str]) -> float:
        return table[s - {null}]

    values = exact_shapley([*players, null], value)
    everyone = frozenset([*players, null])
    assert sum(values.values()) == pytest.approx(value(everyone) - value(frozenset()))
    assert values[null] == pytest.approx(0.0, abs=1e-12)
    # Symmetric players (a game that depends only on coalition size) share equally.
    sizes = {k: float(rng.normal()) for k in range(n + 1)}
    equal = exact_shapley(players, lambda s: sizes[len(s)])
    assert max(equal.values()) - min(equal.values()) < 1e-12


def test_every_permutation_averaged_is_the_exact_value() -> None:
    players = ["a", "b", "c", "d"]
    rng = np.random.default_rng(5)
    table = {c: float(rng.normal()) for c in all_coalitions(players)}
    perms = [list(p) for p in itertools.permutations(players)]
    sampled = permutation_shapley(perms, table.__getitem__, [None] * len(perms))
    assert sampled == pytest.approx(exact_shapley(players, table.__getitem__))


def test_guided_permutations_rotate_the_first_player() -> None:
    players = ["a", "b", "c"]
    perms = guided_permutations(players, 7, seed=1)
    assert [p[0] for p in perms] == ["a", "b", "c", "a", "b", "c", "a"]
    assert all(sorted(p) == players for p in perms)
    assert perms == guided_permutations(players, 7, seed=1)


def test_shares_are_non_negative_and_sum_to_one() -> None:
    assert shares({"a": 3.0, "b": 1.0, "c": -2.0}) == pytest.approx({"a": 0.75, "b": 0.25, "c": 0})
    assert shares({"a": -1.0, "b": 0.0}) is None


# ------------------------------------------------------------- the estimator's plumbing
def test_fedavg_is_flowers_rule() -> None:
    rng = np.random.default_rng(0)
    models = [{"w": rng.normal(size=(3, 4)).astype(np.float32)} for _ in range(3)]
    examples = [10.0, 30.0, 7.0]
    records = [
        RecordDict({"arrays": to_array_record(m), "metrics": MetricRecord({"num-examples": n})})
        for m, n in zip(models, examples, strict=True)
    ]
    flower = aggregate_arrayrecords(records, "num-examples")["w"].numpy()
    ours = fedavg(models, examples)["w"]
    assert ours.dtype == np.float32 and np.array_equal(ours, flower)


def test_the_update_store_gives_back_what_it_kept(tmp_path: Path) -> None:
    store = UpdateStore(tmp_path / "updates")
    start = {"0.weight": np.ones((1, 3), np.float32), "0.bias": np.zeros(1, np.float32)}
    updates = {
        "acme": {"0.weight": np.full((1, 3), 2, np.float32), "0.bias": np.ones(1, np.float32)},
        "b-co": {"0.weight": np.full((1, 3), 4, np.float32), "0.bias": np.ones(1, np.float32)},
    }
    store.save(2, start, updates, {"acme": 30.0, "b-co": 10.0})
    store.save(1, start, {"acme": updates["acme"]}, {"acme": 30.0})
    assert store.numbers() == [1, 2]
    game = store.load(2)
    assert game.players == ("acme", "b-co") and game.examples == {"acme": 30.0, "b-co": 10.0}
    assert np.array_equal(game.model(frozenset())["0.weight"], start["0.weight"])
    assert np.allclose(game.model(frozenset(game.players))["0.weight"], 2.5)


class LinearScorer:
    """Stand-in companies whose AUC for a model is a fixed linear read-out of its weights
    (clipped to [0, 1]); ``absent`` lists companies that fail to answer a given batch."""

    def __init__(self, readouts: Mapping[str, np.ndarray], sizes: Mapping[str, float]):
        self.readouts = readouts
        self.sizes = sizes
        self.batches = 0
        self.absent: dict[int, set[str]] = {}

    def __call__(self, stacked: Weights, count: int) -> dict[str, dict[str, float]]:
        models = unstack_models(stacked)
        assert len(models) == count
        out = {}
        for company, readout in self.readouts.items():
            if company in self.absent.get(self.batches, set()):
                continue
            metrics = {"num-examples": self.sizes[company]}
            for i, model in enumerate(models):
                metrics[f"loss/{i}"] = 0.0
                metrics[f"auc/{i}"] = float(np.clip(readout @ model["w"], 0.0, 1.0))
            out[company] = metrics
        self.batches += 1
        return out

    def utility(self, model: Weights, companies: list[str]) -> float:
        weights = np.array([self.sizes[c] for c in companies])
        aucs = [float(np.clip(self.readouts[c] @ model["w"], 0, 1)) for c in companies]
        return float(np.dot(weights, aucs) / weights.sum())


def toy_games(players: list[str], rounds: int, seed: int = 0) -> list[RoundGame]:
    rng = np.random.default_rng(seed)
    games, start = [], np.full(6, 0.05, np.float32)
    for number in range(1, rounds + 1):
        updates = {
            p: {"w": (start + rng.normal(0.02, 0.03, 6)).astype(np.float32)} for p in players
        }
        examples = {p: float(rng.integers(50, 300)) for p in players}
        games.append(RoundGame(number, {"w": start}, updates, examples))
        start = fedavg([updates[p] for p in players], [examples[p] for p in players])["w"]
    return games


def scorer_for(players: list[str]) -> LinearScorer:
    rng = np.random.default_rng(1)
    return LinearScorer(
        {"eval-1": rng.uniform(0, 1, 6), "eval-2": rng.uniform(0, 1, 6)},
        {"eval-1": 100.0, "eval-2": 300.0},
    )


def test_exact_mode_matches_shapley_of_the_reconstructed_rounds() -> None:
    players = ["a", "b", "c", "d"]
    games = toy_games(players, 3)
    scorer = scorer_for(players)
    report = estimate_contributions(
        games, scorer, ContributionSettings(chunk=7, round_tolerance=0.0)
    )
    assert scorer.batches > 1  # chunked: several queries
    expected = dict.fromkeys(players, 0.0)
    expected_loo = dict.fromkeys(players, 0.0)
    for g in games:

        def value(s: frozenset[str], g: RoundGame = g) -> float:
            return scorer.utility(g.model(s), ["eval-1", "eval-2"])

        for p, v in exact_shapley(players, value).items():
            expected[p] += v
        for p, v in leave_one_out(players, value).items():
            expected_loo[p] += v
    assert report.method == "exact per-round Shapley"
    assert report.shapley() == pytest.approx(expected, abs=1e-9)
    assert {c.company: c.leave_one_out for c in report.companies} == pytest.approx(expected_loo)
    assert sum(report.shapley().values()) == pytest.approx(report.total_gain)
    assert report.models_scored == 3 * 2**4
    assert sum(c.share or 0 for c in report.companies) == pytest.approx(1.0)


def test_sampling_approaches_the_exact_values() -> None:
    players = [f"p{i}" for i in range(7)]
    games = toy_games(players, 2, seed=3)
    exact = estimate_contributions(
        games, scorer_for(players), ContributionSettings(exact_max_players=7, round_tolerance=0)
    )
    sampled = estimate_contributions(
        games,
        scorer_for(players),
        ContributionSettings(
            exact_max_players=0, permutations=300, permutation_tolerance=0.0, round_tolerance=0
        ),
    )
    assert sampled.method == "GTG permutation sampling" and sampled.permutations == 300
    spread = max(exact.shapley().values()) - min(exact.shapley().values())
    for company, value in exact.shapley().items():
        assert abs(sampled.shapley()[company] - value) < 0.1 * spread + 1e-4
    # Truncation stops permutations early and costs fewer models.
    truncated = estimate_contributions(
        games,
        scorer_for(players),
        ContributionSettings(
            exact_max_players=0, permutations=300, permutation_tolerance=0.01, round_tolerance=0
        ),
    )
    assert truncated.models_scored < sampled.models_scored


def test_a_round_that_changed_nothing_is_skipped() -> None:
    players = ["a", "b", "c"]
    games = toy_games(players, 2)
    still = games[1]
    frozen = RoundGame(3, still.start, dict.fromkeys(players, still.start), still.examples)
    report = estimate_contributions([*games, frozen], scorer_for(players))
    assert report.rounds_used == [1, 2] and report.rounds_skipped == [3]


def test_a_company_that_misses_a_batch_is_left_out_of_every_utility() -> None:
    players = ["a", "b", "c", "d"]
    games = toy_games(players, 2)
    scorer = scorer_for(players)
    scorer.absent = {1: {"eval-2"}}
    report = estimate_contributions(games, scorer, ContributionSettings(chunk=10))
    assert report.evaluators == ["eval-1"]
    only_one = scorer_for(players)
    only_one.readouts = {"eval-1": only_one.readouts["eval-1"]}
    alone = estimate_contributions(games, only_one, ContributionSettings(chunk=10))
    assert report.shapley() == pytest.approx(alone.shapley())


def test_no_usable_evaluation_means_no_estimate() -> None:
    games = toy_games(["a", "b"], 1)

    def one_class_everywhere(stacked: Weights, count: int) -> dict[str, dict[str, float]]:
        return {"x": {"num-examples": 10.0, **{f"loss/{i}": 0.1 for i in range(count)}}}

    with pytest.raises(ContributionUnavailable, match="AUC utility is undefined"):
        estimate_contributions(games, one_class_everywhere)
    with pytest.raises(ContributionUnavailable, match="no round updates"):
        estimate_contributions([], one_class_everywhere)


# ------------------------------------------------------- against exact Shapley values
def test_the_estimate_ranks_companies_as_exact_shapley_does(tmp_path: Path) -> None:
    """5 census companies x 300 rows, one with shuffled labels. Ground truth: every one of
    the 31 coalitions retrained with FedAvg in-process; estimate: one job's stored updates."""
    result = experiment(Setting(seed=0), tmp_path)
    truth = result["truth"]["shapley"]
    estimate = result["exact_or"]
    shuffled = "manufacturing-durable-goods"
    assert result["truth"]["coalitions_trained"] == 31
    assert min(truth, key=truth.__getitem__) == shuffled
    assert round(estimate["spearman_shapley"], 9) >= 0.9, (truth, estimate["shapley"])
    assert min(estimate["shares"], key=estimate["shares"].__getitem__) == shuffled
    assert estimate["shares"][shuffled] == min(estimate["shares"].values())
    assert math.isclose(sum(estimate["shares"].values()), 1.0)
    # The sampled (GTG) estimator on the same stored rounds keeps the shuffled company last.
    assert result["gtg_sampled"]["shuffled_lowest"]
