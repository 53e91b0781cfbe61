"""How many OTLP/gRPC calls the gateway holds at once, in all and per peer.

gRPC's own ``maximum_concurrent_rpcs`` answers calls over it with RESOURCE_EXHAUSTED and no
``RetryInfo``, which OTLP clients treat as permanent (the Collector drops the data), and it
counts a call that sent its headers and never a message like any other: a peer opening calls
it never finishes holds all of them. This budget is checked by the handler instead, which
answers UNAVAILABLE with a retry delay, and it is bounded per peer (the host part of the
peer's address): one peer holds at most ``per_peer`` calls, and at most ``slots_per_peer`` of
them hold or wait for a worker, so the other workers stay free for other peers.
"""

from __future__ import annotations

import asyncio
import ipaddress
from urllib.parse import unquote


def peer_host(peer: str) -> str:
    """The host of a gRPC peer string (``ipv4:10.0.0.5:4711``, ``ipv6:[::1]:4711``, with the
    brackets percent-encoded or not); an IPv4-mapped IPv6 address as IPv4; anything else
    (``unix:...``) whole."""
    scheme, _, address = unquote(peer).partition(":")
    if scheme == "ipv4":
        return address.rpartition(":")[0] or address
    if scheme == "ipv6":
        host = address.rpartition("]")[0].lstrip("[") if "]" in address else address
        try:
            mapped = ipaddress.IPv6Address(host).ipv4_mapped
        except ValueError:
            return host
        return str(mapped) if mapped is not None else host
    return peer


class CallBudget:
    """Calls being handled at once: at most ``total``, at most ``per_peer`` from one host.

    Touched only on the event loop's thread. ``per_peer`` at or above ``total`` turns the
    per-peer bounds off (behind a proxy, every call comes from its address)."""

    def __init__(self, *, total: int, per_peer: int, workers: int) -> None:
        self.total = total
        self.per_peer = min(per_peer, total)
        self.slots_per_peer = workers if per_peer >= total else max(1, min(per_peer, workers // 2))
        """Workers one peer may hold or wait for at once: half of them."""
        self._calls: dict[str, int] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._held = 0

    @property
    def held(self) -> int:
        return self._held

    def calls(self, host: str) -> int:
        return self._calls.get(host, 0)

    def enter(self, host: str) -> str | None:
        """Count a call from ``host``; or, over a bound, do not, and say which (the reason of
        the UNAVAILABLE answer)."""
        if self._held >= self.total:
            return f"the gateway is busy: it holds {self.total} gRPC calls"
        calls = self._calls.get(host, 0)
        if calls >= self.per_peer:
            return f"the gateway is busy: this peer holds {self.per_peer} gRPC calls"
        self._calls[host] = calls + 1
        self._held += 1
        return None

    def slots(self, host: str) -> asyncio.Semaphore:
        """The worker slots ``host`` may hold or wait for (only while it has calls)."""
        slots = self._slots.get(host)
        if slots is None:
            slots = self._slots[host] = asyncio.Semaphore(self.slots_per_peer)
        return slots

    def leave(self, host: str) -> None:
        """A call counted by :meth:`enter` has ended."""
        calls = self._calls[host] - 1
        self._held -= 1
        if calls:
            self._calls[host] = calls
        else:
            del self._calls[host]
            self._slots.pop(host, None)
