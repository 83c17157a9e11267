"""Sessions grouped by the address they joined from (its keyed hash), with their user agents.

An address is the unit one client controls: a script can open any number of sessions, but each comes from the
addresses it has. So the cap on sessions, the collusion check and the leave-one-out sensitivity all work on
address clusters. The user agent does not join sessions of different addresses (many honest people share one
browser version); it is reported per cluster, since a swarm usually shows one agent where a lab shows several.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class SessionInfo:
    """One evaluator session as the trust checks see it."""

    id: int
    address: str | None  # the keyed hash of the address; None when none was recorded (scripts, the CLI)
    user_agent: str | None = None


@dataclass(frozen=True)
class Cluster:
    """Sessions from one address (or one session without an address); ``label`` reveals nothing of the address."""

    key: str
    label: str
    sessions: tuple[int, ...]
    user_agents: int  # distinct user agents among the sessions
    has_address: bool

    @property
    def size(self) -> int:
        return len(self.sessions)


def address_clusters(sessions: Iterable[SessionInfo]) -> list[Cluster]:
    """Every session in exactly one cluster: one per address, and one per session without an address.

    Ordered largest first (ties: earliest session first) and labelled A1, A2, ... (an address) or S1, S2, ...
    (a session with no recorded address), so the labels are stable for the same sessions and say nothing
    about the address itself.
    """
    groups: dict[str, list[SessionInfo]] = {}
    for info in sessions:
        key = f"address:{info.address}" if info.address else f"session:{info.id}"
        groups.setdefault(key, []).append(info)
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), min(s.id for s in kv[1])))
    out: list[Cluster] = []
    counters = {True: 0, False: 0}
    for key, members in ordered:
        has_address = key.startswith("address:")
        counters[has_address] += 1
        label = f"{'A' if has_address else 'S'}{counters[has_address]}"
        agents = {m.user_agent or "" for m in members}
        out.append(Cluster(key=key, label=label, sessions=tuple(sorted(m.id for m in members)),
                           user_agents=len(agents), has_address=has_address))
    return out


def cluster_of(clusters: Iterable[Cluster]) -> dict[int, Cluster]:
    """Session id -> its cluster."""
    return {session: cluster for cluster in clusters for session in cluster.sessions}
