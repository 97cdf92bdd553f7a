"""Each company's contribution to a job's model, as a basis for sharing revenue.

Computed from what the coordinator already holds after the rounds: each round's start
model, the model every company returned in that round (before aggregation) with its number
of training examples, and metrics the companies report for models the coordinator sends
them. No company trains again and no raw row is read.

Method: per-round reconstruction, after the "one-round" (OR) method of Song et al. (2019,
"Profit allocation for federated learning") and GTG-Shapley (Liu et al. 2022). In round t the
model of a coalition S of that round's participants is the FedAvg of their returned models
(the round's start model for the empty coalition). Its utility is the test-size weighted
mean over the evaluating companies of the AUC each measures on its own test split. Each
round is a cooperative game; a company's value is the sum over rounds of its Shapley value
in that round's game:

- a round with at most ``exact_max_players`` participants is enumerated exactly;
- a larger round is estimated by permutation sampling with truncation (GTG): the first
  company of each permutation rotates through the participants, the prefix models are
  scored level by level, and once a prefix scores within ``permutation_tolerance`` of the
  whole round, the rest of that permutation adds nothing;
- a round whose aggregate moved the utility by no more than ``round_tolerance`` times the
  largest move of any round is skipped (GTG's within-round truncation): its values sum to
  almost nothing, while sampling noise in it would not.

Leave-one-out is the sum over rounds of U(N_t) - U(N_t without the company).

What it shows the companies: every coalition model, a single company's returned model
among them, is sent to every evaluating company to be scored. Another company thus sees
what one company's update did to the round's model, much as it sees every round's global
model; under secure aggregation the coordinator would not hold single updates at all, and
this estimate could not run as it is.

Shares: the positive Shapley estimates normalised to sum to 1. A company whose estimate is
zero or negative (it did not help, or made the model worse) gets a share of 0 and keeps its
negative value in the report; if no estimate is positive there are no shares.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sandbox.protocol.messages import MAX_MODELS_PER_TASK, stack_models

Weights = dict[str, np.ndarray]
Coalition = frozenset[str]
Key = tuple[int, Coalition]

UTILITY = "test-size weighted mean over companies of the AUC on each company's own test split"


class ContributionUnavailable(RuntimeError):
    """The contributions cannot be estimated (no stored updates, no usable evaluation)."""


def fedavg(models: Sequence[Weights], examples: Sequence[float]) -> Weights:
    """Flower FedAvg's rule: the mean of the models weighted by their examples, in float32."""
    total = float(sum(examples))
    if not models or total <= 0:
        raise ValueError("FedAvg needs at least one model with a positive number of examples")
    out: Weights = {}
    for model, count in zip(models, examples, strict=True):
        factor = count / total
        for name, value in model.items():
            scaled = np.asarray(value, dtype=np.float32) * factor
            out[name] = out[name] + scaled if name in out else scaled
    return out


@dataclass(frozen=True)
class RoundGame:
    """One round as the coordinator saw it: start model, returned models, example counts."""

    number: int
    start: Weights
    updates: Mapping[str, Weights]
    examples: Mapping[str, float]

    @property
    def players(self) -> tuple[str, ...]:
        return tuple(sorted(self.updates))

    def model(self, coalition: Coalition) -> Weights:
        if not coalition:
            return self.start
        members = sorted(coalition)
        return fedavg([self.updates[c] for c in members], [self.examples[c] for c in members])


class UpdateStore:
    """Round updates in the job's run folder (``runs/<job>/updates/round-NNNN.npz``).

    They stay on the coordinator's disk, not in the database: only values and shares go to
    the registry (and later the ledger).
    """

    def __init__(self, folder: Path):
        self.folder = folder

    def path(self, number: int) -> Path:
        return self.folder / f"round-{number:04d}.npz"

    def save(
        self,
        number: int,
        start: Weights,
        updates: Mapping[str, Weights],
        examples: Mapping[str, float],
    ) -> None:
        arrays: dict[str, np.ndarray | np.float64] = {f"start/{k}": v for k, v in start.items()}
        for company, weights in updates.items():
            arrays.update({f"update/{company}/{k}": v for k, v in weights.items()})
            arrays[f"examples/{company}"] = np.float64(examples[company])
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path(number).with_suffix(".tmp.npz")
        # numpy's default, named: else mypy matches ``**arrays`` against ``allow_pickle: bool``.
        np.savez(tmp, allow_pickle=True, **arrays)
        tmp.replace(self.path(number))

    def numbers(self) -> list[int]:
        return sorted(int(p.stem.split("-")[1]) for p in self.folder.glob("round-[0-9]*.npz"))

    def load(self, number: int) -> RoundGame:
        start: Weights = {}
        updates: dict[str, Weights] = {}
        examples: dict[str, float] = {}
        with np.load(self.path(number)) as data:
            for key in data.files:
                kind, _, rest = key.partition("/")
                if kind == "start":
                    start[rest] = data[key]
                elif kind == "update":
                    company, _, name = rest.partition("/")
                    updates.setdefault(company, {})[name] = data[key]
                elif kind == "examples":
                    examples[rest] = float(data[key])
        return RoundGame(number, start, updates, examples)

    def games(self) -> list[RoundGame]:
        return [self.load(n) for n in self.numbers()]


class ScoreModels(Protocol):
    """Sends ``count`` stacked models to the evaluating companies and returns each company's
    reply metrics (``num-examples``, ``loss/<i>``, ``auc/<i>``)."""

    def __call__(self, stacked: Weights, count: int) -> Mapping[str, Mapping[str, float]]: ...


@dataclass(frozen=True)
class ContributionSettings:
    """``permutations`` per sampled round; 0 chooses as many as a budget of ``max_models``
    scored models allows, but never fewer than ``min_permutations`` (below about 20 the
    ranking of 23 companies over 40 rounds was unstable: benchmarks/contribution.py)."""

    exact_max_players: int = 6
    permutations: int = 0
    min_permutations: int = 20
    max_models: int = 6000
    round_tolerance: float = 1e-4  # relative to the largest round's move
    permutation_tolerance: float = 1e-3
    chunk: int = MAX_MODELS_PER_TASK
    seed: int = 0


class UtilityOracle:
    """Utilities of keyed models (round number, coalition), scored in batches and cached. A
    utility pools the companies that scored every model so far, so that all values compare
    like with like."""

    def __init__(self, model_of: Callable[[Key], Weights], score: ScoreModels, chunk: int) -> None:
        self.model_of = model_of
        self.score = score
        self.chunk = chunk
        self.aucs: dict[Key, dict[str, float]] = {}
        self.sizes: dict[str, float] = {}
        self.evaluators: set[str] | None = None

    @property
    def scored(self) -> int:
        return len(self.aucs)

    def ensure(self, keys: Iterable[Key]) -> None:
        todo = list(dict.fromkeys(k for k in keys if k not in self.aucs))
        for begin in range(0, len(todo), self.chunk):
            batch = todo[begin : begin + self.chunk]
            models = [self.model_of(key) for key in batch]
            replies = self.score(stack_models(models), len(models))
            answered = set(replies)
            self.evaluators = answered if self.evaluators is None else self.evaluators & answered
            for i, key in enumerate(batch):
                self.aucs[key] = {
                    company: float(metrics[f"auc/{i}"])
                    for company, metrics in replies.items()
                    if f"auc/{i}" in metrics
                }
            for company, metrics in replies.items():
                self.sizes[company] = float(metrics.get("num-examples", 0.0))

    def value(self, key: Key) -> float:
        aucs = self.aucs[key]
        pool = [c for c in sorted(self.evaluators or ()) if c in aucs and self.sizes.get(c, 0) > 0]
        if not pool:
            raise ContributionUnavailable(
                "no company that scored every model holds both classes in its test split: "
                "the AUC utility is undefined"
            )
        weights = np.array([self.sizes[c] for c in pool])
        return float(np.dot(weights, [aucs[c] for c in pool]) / weights.sum())

    def game_value(self, number: int) -> Callable[[Coalition], float]:
        return lambda coalition: self.value((number, coalition))


def exact_shapley(players: Sequence[str], value: Callable[[Coalition], float]) -> dict[str, float]:
    """Shapley values by enumerating every coalition (2^n values of ``value``)."""
    n = len(players)
    weight = [math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n) for k in range(n)]
    out = {}
    for player in players:
        others = [p for p in players if p != player]
        total = 0.0
        for k in range(n):
            for members in itertools.combinations(others, k):
                coalition = frozenset(members)
                total += weight[k] * (value(coalition | {player}) - value(coalition))
        out[player] = total
    return out


def leave_one_out(players: Sequence[str], value: Callable[[Coalition], float]) -> dict[str, float]:
    everyone = frozenset(players)
    return {p: value(everyone) - value(everyone - {p}) for p in players}


def all_coalitions(players: Sequence[str]) -> list[Coalition]:
    return [
        frozenset(members)
        for k in range(len(players) + 1)
        for members in itertools.combinations(players, k)
    ]


def guided_permutations(players: Sequence[str], count: int, seed: int) -> list[list[str]]:
    """``count`` permutations; the k-th starts with player k mod n (GTG's guided sampling),
    the rest in seeded random order."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(count):
        first = players[k % len(players)]
        rest = [p for p in players if p != first]
        out.append([first, *(rest[i] for i in rng.permutation(len(rest)))])
    return out


def permutation_shapley(
    permutations: Sequence[Sequence[str]],
    value: Callable[[Coalition], float],
    truncated_at: Sequence[int | None],
) -> dict[str, float]:
    """Mean marginal contributions over ``permutations``; past a permutation's truncation
    level its remaining players add nothing."""
    players = permutations[0]
    totals = dict.fromkeys(players, 0.0)
    for perm, cut in zip(permutations, truncated_at, strict=True):
        previous = value(frozenset())
        for level, player in enumerate(perm, start=1):
            if cut is not None and level > cut:
                break
            current = value(frozenset(perm[:level]))
            totals[player] += current - previous
            previous = current
    return {p: total / len(permutations) for p, total in totals.items()}


def shares(values: Mapping[str, float]) -> dict[str, float] | None:
    """Non-negative shares summing to 1: positive values normalised, the rest 0."""
    positive = {c: max(v, 0.0) for c, v in values.items()}
    total = sum(positive.values())
    if total <= 0:
        return None
    return {c: v / total for c, v in positive.items()}


@dataclass(frozen=True)
class CompanyContribution:
    company: str
    rounds: int
    leave_one_out: float | None
    shapley: float | None
    share: float | None


@dataclass(frozen=True)
class ContributionReport:
    method: str
    utility: str
    rounds_used: list[int]
    rounds_skipped: list[int]
    models_scored: int
    evaluators: list[str]
    permutations: int | None
    total_gain: float
    companies: list[CompanyContribution]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def shapley(self) -> dict[str, float | None]:
        return {c.company: c.shapley for c in self.companies}


def _sample_plan(
    games: Sequence[RoundGame],
    oracle: UtilityOracle,
    settings: ContributionSettings,
) -> tuple[dict[int, list[list[str]]], dict[int, list[int | None]], int]:
    """Permutations per sampled round and where each was truncated, scoring prefixes
    level by level so that a truncated permutation costs nothing more."""
    if settings.permutations > 0:
        count = settings.permutations
    else:
        levels = sum(max(len(g.players) - 2, 1) for g in games)
        count = max(settings.min_permutations, (settings.max_models - oracle.scored) // levels)
    perms = {
        g.number: guided_permutations(g.players, count, settings.seed * 1_000_003 + g.number)
        for g in games
    }
    cuts: dict[int, list[int | None]] = {g.number: [None] * count for g in games}
    full = {g.number: oracle.value((g.number, frozenset(g.players))) for g in games}
    for level in range(1, max(len(g.players) for g in games) - 1):
        wanted = [
            (g.number, k)
            for g in games
            if level < len(g.players) - 1
            for k in range(count)
            if cuts[g.number][k] is None
        ]
        oracle.ensure((n, frozenset(perms[n][k][:level])) for n, k in wanted)
        for n, k in wanted:
            score = oracle.value((n, frozenset(perms[n][k][:level])))
            if abs(full[n] - score) <= settings.permutation_tolerance:
                cuts[n][k] = level
    return perms, cuts, count


def estimate_contributions(
    games: Sequence[RoundGame],
    score: ScoreModels,
    settings: ContributionSettings = ContributionSettings(),
) -> ContributionReport:
    """Leave-one-out and Shapley estimates per company from the stored rounds."""
    games = [g for g in games if g.players]
    if not games:
        raise ContributionUnavailable("no round updates are stored for this job")
    by_number = {g.number: g for g in games}
    oracle = UtilityOracle(lambda key: by_number[key[0]].model(key[1]), score, settings.chunk)
    # Every round: its start model, its aggregate, and the aggregate without each company.
    oracle.ensure(
        (g.number, coalition)
        for g in games
        for coalition in [
            frozenset(),
            frozenset(g.players),
            *(frozenset(g.players) - {p} for p in g.players),
        ]
    )
    notes: list[str] = []
    gains = {
        g.number: oracle.value((g.number, frozenset(g.players)))
        - oracle.value((g.number, frozenset()))
        for g in games
    }
    cutoff = settings.round_tolerance * max(abs(v) for v in gains.values())
    used = [g for g in games if abs(gains[g.number]) > cutoff]
    skipped = [g for g in games if abs(gains[g.number]) <= cutoff]
    exact = [g for g in used if len(g.players) <= settings.exact_max_players]
    sampled = [g for g in used if len(g.players) > settings.exact_max_players]
    oracle.ensure((g.number, c) for g in exact for c in all_coalitions(g.players))
    perms, cuts, count = _sample_plan(sampled, oracle, settings) if sampled else ({}, {}, None)

    companies = sorted({p for g in games for p in g.players})
    shapley = dict.fromkeys(companies, 0.0)
    loo = dict.fromkeys(companies, 0.0)
    rounds = dict.fromkeys(companies, 0)
    total_gain = 0.0
    for g in used:
        value = oracle.game_value(g.number)
        total_gain += value(frozenset(g.players)) - value(frozenset())
        if g.number in perms:
            phi = permutation_shapley(perms[g.number], value, cuts[g.number])
        else:
            phi = exact_shapley(g.players, value)
        for company, amount in phi.items():
            shapley[company] += amount
        for company, amount in leave_one_out(g.players, value).items():
            loo[company] += amount
        for company in g.players:
            rounds[company] += 1
    if skipped:
        notes.append(
            f"{len(skipped)} of {len(games)} rounds moved the utility by at most "
            f"{settings.round_tolerance:.2%} of the largest round's move ({cutoff:.2g}) and "
            "were skipped"
        )
    evaluators = sorted(oracle.evaluators or ())
    share = shares(shapley)
    if share is None:
        notes.append("no company's estimate is positive: no shares")
    method = "+".join(
        name
        for name, part in (
            ("exact per-round Shapley", exact),
            ("GTG permutation sampling", sampled),
        )
        if part
    )
    return ContributionReport(
        method=method or "none (every round skipped)",
        utility=UTILITY,
        rounds_used=[g.number for g in used],
        rounds_skipped=[g.number for g in skipped],
        models_scored=oracle.scored,
        evaluators=evaluators,
        permutations=count,
        total_gain=total_gain,
        companies=[
            CompanyContribution(
                company=c,
                rounds=rounds[c],
                leave_one_out=loo[c],
                shapley=shapley[c],
                share=None if share is None else share[c],
            )
            for c in companies
        ],
        notes=notes,
    )


def volume_shares(rows: Mapping[str, int], why: str) -> ContributionReport:
    """Shares by training rows, for jobs whose round updates the coordinator never sees.

    Under secure aggregation the coordinator holds only each round's sum, and any estimate
    that compares coalitions would reveal single updates; the shares then rest on what each
    company put in (its training rows, from its own statistics), and the report says so."""
    total = sum(rows.values())
    companies = [
        CompanyContribution(
            company=company,
            rounds=0,
            leave_one_out=None,
            shapley=None,
            share=(count / total) if total else None,
        )
        for company, count in sorted(rows.items())
    ]
    return ContributionReport(
        method="training rows",
        utility="share of the job's training rows",
        rounds_used=[],
        rounds_skipped=[],
        models_scored=0,
        evaluators=[],
        permutations=None,
        total_gain=0.0,
        companies=companies,
        notes=[why],
    )
