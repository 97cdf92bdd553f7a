"""Flower's aggregation strategies, chosen by the job spec."""

from __future__ import annotations

from flwr.serverapp.strategy import FedAvg, FedMedian, FedProx, FedTrimmedAvg, Krum, Strategy

from sandbox.protocol.jobspec import StrategySpec


def make_strategy(spec: StrategySpec) -> Strategy:
    """The strategy whose ``aggregate_train`` combines a round's accepted updates.

    The coordinator selects participants and validates replies itself; the strategy only
    aggregates. FedProx aggregates like FedAvg; its proximal term lives in the client loop.
    """
    if spec.name == "fedavg":
        return FedAvg()
    if spec.name == "fedprox":
        return FedProx(proximal_mu=spec.proximal_mu)
    if spec.name == "fedtrimmedavg":
        return FedTrimmedAvg(beta=spec.trim_beta)
    if spec.name == "fedmedian":
        return FedMedian()
    if spec.name == "krum":
        return Krum(num_malicious_nodes=spec.krum_byzantine)
    raise ValueError(f"unknown strategy {spec.name!r}")
