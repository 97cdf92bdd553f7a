"""The seam between a run and its governance.

The runner calls its governor at fixed points: before the run, to choose each step's
participants, after each exchange (the replies' receipts), after each round, for the model,
when it stops, and for the release decision. :class:`coordinator.governed.RoundGovernor` is the
product's: the policy engine decides, receipts are required, everything goes to the ledger.
:class:`NoGovernor` runs the same rounds with none of that; only the benchmarks that measure
the learning engine alone, or what governance costs, use it, and neither the CLI nor the API
can reach it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from coordinator.release import ReleaseGate, ReleaseRecorder
from coordinator.selection import ParticipantSelector, budget_selector
from policies.tiers import TierConfig
from sandbox.privacy.budget import shipped_tiers
from sandbox.protocol.messages import TrainingPlan
from sandbox.registry.models import Round

if TYPE_CHECKING:
    from coordinator.messaging import Exchange


class Governor(Protocol):
    selector: ParticipantSelector
    release_gate: ReleaseGate
    release_recorder: ReleaseRecorder

    def tiers(self) -> TierConfig: ...

    def check_start(self) -> None: ...

    def verify(self, task: str, round_number: int, exchange: Exchange) -> None: ...

    def record_exchange(self, task: str, round_number: int, exchange: Exchange) -> None: ...

    def witness_config(self) -> dict[str, str]: ...

    def collect_witnesses(self, exchange: Exchange) -> None: ...

    def record_round(self, record: Round, plan: TrainingPlan | None) -> None: ...

    def record_model(self, digest: str, rounds: int) -> None: ...

    def record_stop(self, cause: str, round_number: int) -> None: ...


class NoGovernor:
    """No decisions, no receipts, no ledger: the bare arm of the benchmarks. The release is
    still Cedar's decision (over the shipped policy set, recorded nowhere but the registry)."""

    def __init__(self, release_gate: ReleaseGate, release_recorder: ReleaseRecorder):
        self.selector: ParticipantSelector = budget_selector
        self.release_gate = release_gate
        self.release_recorder = release_recorder

    def tiers(self) -> TierConfig:
        return shipped_tiers()

    def check_start(self) -> None:
        return None

    def verify(self, task: str, round_number: int, exchange: Exchange) -> None:
        return None

    def record_exchange(self, task: str, round_number: int, exchange: Exchange) -> None:
        return None

    def witness_config(self) -> dict[str, str]:
        return {}

    def collect_witnesses(self, exchange: Exchange) -> None:
        return None

    def record_round(self, record: Round, plan: TrainingPlan | None) -> None:
        return None

    def record_model(self, digest: str, rounds: int) -> None:
        return None

    def record_stop(self, cause: str, round_number: int) -> None:
        return None
