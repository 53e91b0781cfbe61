"""The cross-thread ledger of unsettled events, driven directly."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from otel_greenflash._deliver.ledger import Ledger


@dataclass(eq=False)
class Item:
    name: str
    seq: int
    settled: bool = False


def make(name: str, seq: int) -> Item:
    return Item(name, seq)


def test_admits_what_fits_and_waits_for_room() -> None:
    ledger: Ledger[Item] = Ledger(capacity=2)
    first = ledger.admit(["a", "b", "c"], make)
    assert [item.name for item in first] == ["a", "b"]
    later: list[Item] = []
    waiting = threading.Thread(target=lambda: later.extend(ledger.admit(["c"], make)))
    waiting.start()
    time.sleep(0.1)
    assert later == []  # full: the admitter waits
    assert ledger.claim(first[0])
    ledger.release(first[0])
    waiting.join(5)
    assert [item.name for item in later] == ["c"]
    assert later[0].seq == 2


def test_one_claim_wins_and_abandon_leaves_claimed_entries_to_their_claimer() -> None:
    ledger: Ledger[Item] = Ledger(capacity=10)
    claimed, free = ledger.admit(["claimed", "free"], make)
    assert ledger.claim(claimed)
    assert not ledger.claim(claimed)
    assert ledger.abandon() == [free]
    assert not ledger.claim(free)  # shutdown settled it
    assert len(ledger) == 1  # the claimed one until its claimer releases it
    ledger.release(claimed)
    assert len(ledger) == 0


def test_wait_settled_ignores_entries_admitted_after_the_call() -> None:
    ledger: Ledger[Item] = Ledger(capacity=10)
    [early] = ledger.admit(["early"], make)
    done: list[bool] = []
    waiting = threading.Thread(target=lambda: done.append(ledger.wait_settled(5)))
    waiting.start()
    time.sleep(0.1)
    ledger.admit(["late"], make)  # never settled
    ledger.claim(early)
    ledger.release(early)
    waiting.join(5)
    assert done == [True]
    assert not ledger.wait_settled(0.05)  # the late one is still unsettled


def test_close_wakes_a_full_admitter_with_nothing() -> None:
    ledger: Ledger[Item] = Ledger(capacity=1)
    ledger.admit(["a"], make)
    result: list[list[Item]] = []
    waiting = threading.Thread(target=lambda: result.append(ledger.admit(["b"], make)))
    waiting.start()
    time.sleep(0.1)
    ledger.close()
    waiting.join(5)
    assert result == [[]]
