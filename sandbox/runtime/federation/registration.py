"""Company nodes at the SuperLink: each node's key made at the company and recorded by the
operator, registered with the SuperLink, and waited for until online."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from sandbox.errors import Conflict
from sandbox.governance import Governance
from sandbox.identity import pki
from sandbox.node.home import NodeHome
from sandbox.runtime.federation import processes
from sandbox.runtime.federation.commands import FederationError, Step
from sandbox.runtime.federation.flwr_cli import FlwrCli, FlwrError
from sandbox.services import nodes, principals


def _quiet(_: str) -> None:
    return None


def ensure_node_key(gov: Governance, company_id: str, node: NodeHome) -> str:
    """The company's node key, created in its node folder on first use (the company's step),
    with its public half recorded by the operator (the sandbox's step, decided and recorded).
    A node folder whose key is not the registry's is refused: the SuperLink would refuse
    that node anyway."""
    path = node.node_auth_key_path
    if not node.info_path.exists() or node.company_id != company_id:
        raise FederationError(f"{node.folder} is not the node folder of {company_id}")
    if path.exists():
        public = pki.read_node_private_key_public_line(path)
    else:
        public = pki.generate_node_auth_key(path, f"{company_id} node")
    try:
        return nodes.record_node_key(gov, principals.operator(gov), company_id, public).public_key
    except Conflict as exc:
        raise FederationError(
            f"the registry holds another node key for {company_id} than {path} ({exc}); rotate "
            f"it with `sandbox federation node-key {company_id} --replace`"
        ) from exc


def register_nodes(
    gov: Governance, cli: FlwrCli, companies: Iterable[str], keys_dir: Path, step: Step = _quiet
) -> dict[str, str]:
    """Register each company's node key, as the registry holds it, with the SuperLink; the
    node id per company. A key the SuperLink already holds counts when the registry
    recorded its node id at this SuperLink (a re-run after a restart)."""
    operator = principals.operator(gov)
    recorded = {k.company_id: k for k in nodes.node_keys(gov, operator)}
    node_ids = {}
    for company_id in companies:
        record = recorded.get(company_id)
        if record is None:
            raise FederationError(f"company {company_id!r} has no node key in the registry")
        key_file = keys_dir / f"{company_id}.pub"
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(f"{record.public_key} {company_id}\n")
        step(f"registering {company_id}'s node key ({record.fingerprint[:19]}…)")
        try:
            node_id = cli.register(key_file, company_id)
        except FlwrError as exc:
            if (
                "already in use" in str(exc)
                and record.superlink == cli.address
                and record.flower_node_id is not None
            ):
                node_ids[company_id] = record.flower_node_id
                continue
            raise FederationError(str(exc)) from exc
        nodes.record_registration(
            gov, operator, company_id, record.public_key, cli.address, node_id
        )
        node_ids[company_id] = node_id
    return node_ids


def wait_online(
    cli: FlwrCli,
    node_ids: Iterable[str],
    timeout: float,
    watch: Callable[[], None] = lambda: None,
) -> float:
    """Wait until every node id is online at the SuperLink; ``watch`` raises when a node's
    process has died (no point waiting for it)."""
    wanted = set(node_ids)

    def online() -> bool:
        watch()
        try:
            statuses = cli.nodes()
        except FlwrError:
            return False
        return all(statuses.get(n) == "online" for n in wanted)

    return processes.wait_until(online, timeout, "company nodes online", step=1.0)
