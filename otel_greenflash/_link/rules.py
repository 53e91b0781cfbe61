"""The linking rules: how an event finds its conversation through the trace. Data
structures and pure functions; the link stage that runs them is :mod:`.linker`, its
application-thread side :mod:`.span_notes`.

Resolution order per id field (first hit wins): the event span itself, its nearest live ancestor
in this process, W3C baggage in the span's start context, any other span of the same local trace
(including ones that end later), then configuration defaults (product id only).

Three small structures, each with a fixed bound:

- :class:`LiveSpans` — span id → live span, from on_start to on_end (bounded by open spans).
- :class:`TraceIds` — trace id → ids seen on ended spans of that trace (LRU, ``max_traces``).
- :class:`WaitingEvents` — event spans whose conversation is unknown, waiting for the local root
  span to end (bounded by ``max_waiting``, :data:`MAX_WAITING_BYTES` and ``linger_seconds``);
  owned by the worker thread.

Ids longer than :data:`MAX_ID_LENGTH` are not ids: linking skips them and the store never holds
them, so each trace's entry stays small whatever the application puts in an id attribute.
"""

from __future__ import annotations

import collections
import itertools
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.util.types import AttributeValue

from .. import attributes as attr
from .._config import ConfigurationError

Ids = dict[str, AttributeValue]
"""Linking key (``greenflash.*``) → value."""

DEFAULT_ALIASES = attr.DEFAULT_ALIASES

CONVERSATION_KEYS = (attr.CONVERSATION_ID, attr.CONVERSATION_EXTERNAL_ID)

MAX_ID_LENGTH = 256
"""Longest id, in characters (an integer id: in decimal digits), linking and mapping take. The
Events API documents no limit; real ids (UUIDs, thread and session ids, e-mail addresses, at
most 254 characters) are far shorter, while an attribute holding a prompt or a document is not
an id. A longer value is skipped for linking (counted, and warned about naming its attribute);
on an event's own ``greenflash.*`` id key it makes the event invalid, as any malformed id does."""
_INT_ID_LIMIT = 10**MAX_ID_LENGTH
_NEGATIVE_INT_ID_LIMIT = -(10 ** (MAX_ID_LENGTH - 1))


def is_too_long_id(value: object) -> bool:
    """True for a string or integer longer than :data:`MAX_ID_LENGTH` characters."""
    if isinstance(value, str):
        return len(value) > MAX_ID_LENGTH
    if isinstance(value, int) and not isinstance(value, bool):
        return not _NEGATIVE_INT_ID_LIMIT < value < _INT_ID_LIMIT
    return False


class InTrace(Protocol):
    """Anything that waits for its trace: it names the trace."""

    @property
    def trace_id(self) -> int: ...


Waiter = TypeVar("Waiter", bound=InTrace)


class LinkKeys:
    """The set of attribute keys that carry ids: ``greenflash.*`` keys plus aliases."""

    def __init__(self, aliases: Mapping[str, str] | None = None) -> None:
        chosen = dict(DEFAULT_ALIASES if aliases is None else aliases)
        for source, target in chosen.items():
            if target not in attr.ID_KEYS:
                raise ConfigurationError(
                    f"alias {source!r} targets {target!r}, which is not a Greenflash id key; "
                    f"allowed targets: {', '.join(attr.ID_KEYS)}"
                )
        self.aliases: Mapping[str, str] = chosen
        self._sources: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
            (key, (key, *(s for s, t in chosen.items() if t == key))) for key in attr.ID_KEYS
        )
        self.all_keys: frozenset[str] = frozenset(attr.ID_KEYS) | frozenset(chosen)

    def ids_from(self, attributes: Mapping[str, Any] | None) -> Ids:
        """The valid ids found in ``attributes``; values that are not valid ids are skipped."""
        found: Ids = {}
        if not attributes:
            return found
        for key, sources in self._sources:
            for source in sources:
                value = attributes.get(source)
                if value is not None and is_valid_id(key, value):
                    found[key] = value
                    break
        return found

    def split_ids(self, attributes: Mapping[str, Any] | None) -> tuple[Ids, Ids]:
        """Valid ids from ``greenflash.*`` keys, and (for the other fields) from aliases."""
        primary: Ids = {}
        aliased: Ids = {}
        if not attributes:
            return primary, aliased
        for key, sources in self._sources:
            value = attributes.get(key)
            if value is not None and is_valid_id(key, value):
                primary[key] = value
                continue
            for source in sources[1:]:
                value = attributes.get(source)
                if value is not None and is_valid_id(key, value):
                    aliased[key] = value
                    break
        return primary, aliased


_ID_LIKE_WORDS = ("session", "conversation", "thread", "chat")
_NOT_CONVERSATIONS = frozenset({"langsmith.trace.session_id"})
"""Keys that look like conversation ids but are not (a LangSmith project)."""


def id_like_keys(
    attribute_sets: Iterable[Mapping[str, object] | None], known: Iterable[str], limit: int = 5
) -> list[str]:
    """Keys in ``attribute_sets`` that look like session or conversation ids and are neither
    ``greenflash.*`` keys nor ``known`` aliases (for the unlinked warning), sorted."""
    skip = set(known) | _NOT_CONVERSATIONS
    found: set[str] = set()
    for attributes in attribute_sets:
        for key in tuple(attributes or ()):  # one C-level copy: a live span may be written to
            lowered = key.lower()
            if (
                key not in skip
                and not key.startswith(attr.PREFIX)
                and any(word in lowered for word in _ID_LIKE_WORDS)
            ):
                found.add(key)
    return sorted(found)[:limit]


def is_valid_id(key: str, value: object) -> bool:
    """True when ``value`` may be sent in the field of ``key`` (UUID or external id, at most
    :data:`MAX_ID_LENGTH` characters)."""
    if is_too_long_id(value):
        return False
    if key in attr.UUID_ID_KEYS:
        if not isinstance(value, str):
            return False
        try:
            uuid.UUID(value)
        except ValueError:
            return False
        return True
    if isinstance(value, bool):
        return False
    return (isinstance(value, str) and bool(value.strip())) or isinstance(value, int)


def merge_ids(levels: Iterable[Mapping[str, AttributeValue]]) -> Ids:
    """Merge id levels, highest priority first: the first level holding a key wins."""
    merged: Ids = {}
    for level in levels:
        for key, value in level.items():
            merged.setdefault(key, value)
    return merged


def has_conversation(ids: Mapping[str, AttributeValue]) -> bool:
    return any(key in ids for key in CONVERSATION_KEYS)


def forget_oldest_share(entries: dict[int, Any], share: int = 8) -> list[int]:
    """Remove the oldest ``1/share`` of ``entries`` (at least one) and return their keys.

    Safe while other threads insert and pop: ``list(dict)`` copies the keys without running
    Python code (the keys are ints), and ``pop`` with a default never raises.
    """
    keys = list(entries)
    oldest = keys[: max(1, len(keys) // share)]
    for key in oldest:
        entries.pop(key, None)
    return oldest


class LiveSpans:
    """Spans between on_start and on_end, so an ending event span can find its live ancestors.

    The processor's hooks read and write ``spans``/``baggage`` directly (hot path). Spans are
    held by weak reference: a span the application dropped without ending it can never be
    read again by anyone, so only its small entry stays (≈ 150 bytes), not the span. At
    ``max_spans`` the oldest entries are evicted, so spans that never end cannot stop linking.
    """

    def __init__(self, max_spans: int = 100_000) -> None:
        self.max_spans = max_spans
        self.spans: dict[int, weakref.ref[ReadableSpan]] = {}
        """Span id → weak reference to the live span, in start order."""
        self.baggage: dict[int, Mapping[str, object]] = {}
        """Span id → baggage of its start context, only for spans started with baggage."""

    def __len__(self) -> int:
        return len(self.spans)

    def evict_oldest_share(self) -> None:
        """Forget the oldest eighth at once (evicting one at a time from the front of a dict
        costs a scan over the holes left by earlier deletions, every time).

        Runs on application threads while others add and remove spans: the keys are copied in
        one C-level step and removed with ``pop``, so nothing here can raise.
        """
        oldest = forget_oldest_share(self.spans)
        for span_id in oldest:
            self.baggage.pop(span_id, None)

    def ancestors(self, span: ReadableSpan, limit: int = 256) -> tuple[ReadableSpan, ...]:
        """Live ancestors of ``span`` in this process, nearest first."""
        chain: list[ReadableSpan] = []
        spans = self.spans
        parent = span._parent  # a SpanContext: (trace_id, span_id, is_remote, ...)
        while parent is not None and not parent[2] and len(chain) < limit:
            reference = spans.get(parent[1])
            ancestor = reference() if reference is not None else None
            if ancestor is None:
                break
            chain.append(ancestor)
            parent = ancestor._parent
        return tuple(chain)


MAX_SPANS_PER_TRACE = 256
"""Ended spans with ids remembered one by one per trace (for log records emitted in them)."""

MAX_SPAN_BYTES_PER_TRACE = 32 * 1024
"""Bytes (``sys.getsizeof``) the one-by-one entries of a trace (``spans``, ``span_baggage``)
may take: their dicts and the values not already held for the whole trace. Past it, ended
spans are remembered for the trace as a whole only (what events link through)."""

_ENTRY_BYTES = 100
"""A dict slot and an int key, for the accounting above."""


@dataclass(slots=True)
class _TraceRecord:
    attached: Ids = field(default_factory=dict)
    root: dict[str, Any] = field(default_factory=dict)
    other: dict[str, Any] = field(default_factory=dict)
    spans: dict[int, dict[str, Any]] = field(default_factory=dict)
    """Span id → the id attributes of that ended span (log records emitted in it read them)."""
    span_baggage: dict[int, Ids] = field(default_factory=dict)
    """Span id → the ids in that ended span's start baggage (for exported log records)."""
    ended_at: float | None = None
    waited_on: bool = False
    queued_for_purge: bool = False
    span_bytes: int = 0
    """What ``spans`` and ``span_baggage`` take, counted against MAX_SPAN_BYTES_PER_TRACE."""


class TraceIds:
    """Id attributes seen on the ended spans of each local trace; thread-safe, LRU-bounded.

    Spans are recorded raw (the id and alias keys they carry, first value per key wins);
    validation and precedence are applied when read, on the worker thread: ids attached by
    ``attach_conversation()``, then ``greenflash.*`` keys of the local root, of other spans,
    then aliases of the root, of other spans. Values longer than :data:`MAX_ID_LENGTH` are not
    recorded (counted in ``too_long`` by attribute), so a trace holds at most one value per id
    key for its root and one for its other spans, plus :data:`MAX_SPAN_BYTES_PER_TRACE`.

    A trace that events wait on (:meth:`wait`) is not forgotten when the LRU bound pushes it
    out: it moves aside (``_waited``) until its root ends or its events stop waiting
    (:meth:`done_waiting`), so the root's end still finds them. Those traces are bounded by the
    waiting store (``max_waiting``, ``MAX_WAITING_BYTES``), not by ``max_traces``.
    """

    def __init__(
        self, link_keys: LinkKeys, max_traces: int = 4096, retain_seconds: float = 30.0
    ) -> None:
        self._link_keys = link_keys
        self._max_traces = max_traces
        self._retain_seconds = retain_seconds
        self._lock = threading.Lock()
        self._traces: collections.OrderedDict[int, _TraceRecord] = collections.OrderedDict()
        self._waited: dict[int, _TraceRecord] = {}
        """Traces pushed out of ``_traces`` by its bound while events wait on them."""
        self._ended: collections.deque[tuple[float, int, _TraceRecord]] = collections.deque()
        """Roots' ends in the order they happened, so ``purge`` looks only at what expired."""
        self.too_long: collections.Counter[str] = collections.Counter()
        """Attribute key → values not recorded because longer than MAX_ID_LENGTH (taken and
        reported by the worker, see :meth:`take_too_long`)."""

    def __len__(self) -> int:
        return len(self._traces)

    def reset(self) -> None:
        """Forget everything, with a new lock (after a fork, the old one may be held)."""
        self._lock = threading.Lock()
        self._traces.clear()
        self._waited.clear()
        self._ended.clear()
        self.too_long.clear()

    def __contains__(self, trace_id: object) -> bool:
        return trace_id in self._traces or trace_id in self._waited

    def record(
        self, trace_id: int, attributes: Mapping[str, Any], *, root: bool, span_id: int = 0
    ) -> None:
        """Remember the id and alias attributes of an ended span of ``trace_id``."""
        keys = self._link_keys.all_keys
        with self._lock:
            target = self._record(trace_id)
            raw = target.root if root else target.other
            own: dict[str, Any] = {}
            for key, value in attributes.items():
                if key in keys:
                    if not isinstance(value, (str, int)):
                        continue  # never an id (see is_valid_id): nothing to hold
                    if is_too_long_id(value):
                        self.too_long[key] += 1
                        continue
                    held = raw.get(key)
                    if held is None:
                        raw[key] = value
                    elif held is not value and held == value:
                        value = held  # one copy of a value many spans repeat (decoded OTLP)
                    own[key] = value
            if span_id and own and len(target.spans) < MAX_SPANS_PER_TRACE:
                cost = _ENTRY_BYTES + sys.getsizeof(own)
                cost += sum(
                    sys.getsizeof(value) for key, value in own.items() if raw.get(key) is not value
                )
                fits = target.span_bytes + cost <= MAX_SPAN_BYTES_PER_TRACE
                if fits and target.spans.setdefault(span_id, own) is own:
                    target.span_bytes += cost

    def take_too_long(self) -> dict[str, int]:
        """The counts of over-long values not recorded since the last call, by attribute."""
        with self._lock:
            counts = dict(self.too_long)
            self.too_long.clear()
        return counts

    def span_attributes(self, trace_id: int, span_id: int) -> dict[str, Any] | None:
        """The id attributes recorded for one ended span of the trace, or None when none were
        recorded one by one (unknown span, or the trace's entries were full)."""
        with self._lock:
            record = self._find(trace_id)
            if record is None:
                return None
            own = record.spans.get(span_id)
            return dict(own) if own is not None else None

    def span_ids(self, trace_id: int, span_id: int) -> Ids:
        """The ids of one ended span of the trace (empty when unknown)."""
        with self._lock:
            record = self._find(trace_id)
            raw = dict(record.spans.get(span_id, {})) if record is not None else {}
        return self._link_keys.ids_from(raw)

    def record_span_baggage(self, trace_id: int, span_id: int, ids: Ids) -> None:
        """Remember the ids of an ended span's start baggage."""
        with self._lock:
            target = self._record(trace_id)
            if len(target.span_baggage) < MAX_SPANS_PER_TRACE:
                cost = _ENTRY_BYTES + sys.getsizeof(ids) + sum(map(sys.getsizeof, ids.values()))
                fits = target.span_bytes + cost <= MAX_SPAN_BYTES_PER_TRACE
                if fits and target.span_baggage.setdefault(span_id, ids) is ids:
                    target.span_bytes += cost

    def span_baggage_ids(self, trace_id: int, span_id: int) -> Ids:
        """The ids of one ended span's start baggage (empty when unknown)."""
        with self._lock:
            record = self._find(trace_id)
            return dict(record.span_baggage.get(span_id, {})) if record is not None else {}

    def attach(self, trace_id: int, ids: Mapping[str, AttributeValue]) -> None:
        """Ids learned mid-trace (e.g. from the Messages API); they replace earlier values.
        Values that are not valid ids (over-long ones included) are left out."""
        valid = {key: value for key, value in ids.items() if is_valid_id(key, value)}
        with self._lock:
            self._record(trace_id).attached.update(valid)

    def wait(self, trace_id: int) -> str:
        """Mark that an event waits for this trace's local root: ``"wait"``, or ``"ended"``
        when the root already ended."""
        with self._lock:
            record = self._record(trace_id)
            if record.ended_at is not None:
                return "ended"
            record.waited_on = True
            return "wait"

    def done_waiting(self, trace_id: int) -> None:
        """No event waits on this trace any more (released at its root's end, pushed out by
        the waiting store's bounds, or its linger passed): it need not be kept past the LRU
        bound."""
        with self._lock:
            record = self._waited.pop(trace_id, None) or self._traces.get(trace_id)
            if record is not None:
                record.waited_on = False

    def is_open(self, trace_id: int) -> bool:
        """True while the trace's local root has not been seen ending."""
        with self._lock:
            record = self._find(trace_id)
            return record is None or record.ended_at is None

    def root_ended(self, trace_id: int) -> bool:
        """Note the local root's end; True when events of this trace are waiting for it."""
        with self._lock:
            record = self._record(trace_id)
            record.ended_at = ended_at = time.monotonic()
            if not record.queued_for_purge:  # one entry per record, however often it ends
                record.queued_for_purge = True
                self._ended.append((ended_at, trace_id, record))
                if len(self._ended) > 2 * self._max_traces:  # drop evicted traces' entries
                    live = [
                        entry for entry in self._ended if self._traces.get(entry[1]) is entry[2]
                    ]
                    self._ended.clear()
                    self._ended.extend(live)
            return record.waited_on  # kept until the worker let them go (done_waiting)

    def ids(self, trace_id: int) -> Ids:
        with self._lock:
            record = self._find(trace_id)
            if record is None:
                return {}
            attached, root, other = dict(record.attached), dict(record.root), dict(record.other)
        root_ids, root_aliased = self._link_keys.split_ids(root)
        other_ids, other_aliased = self._link_keys.split_ids(other)
        return merge_ids((attached, root_ids, other_ids, root_aliased, other_aliased))

    def purge(self, now: float | None = None) -> None:
        """Drop traces whose local root ended more than ``retain_seconds`` ago."""
        cutoff = (time.monotonic() if now is None else now) - self._retain_seconds
        with self._lock:
            ended = self._ended
            while ended and ended[0][0] < cutoff:
                _, trace_id, record = ended.popleft()
                if self._traces.get(trace_id) is not record:
                    continue  # evicted meanwhile
                latest = record.ended_at
                if latest is not None and latest >= cutoff:  # ended again since: wait for that
                    ended.append((latest, trace_id, record))
                else:
                    if record.waited_on:  # the worker has not read its ids yet
                        self._waited[trace_id] = record  # first: never in neither dict
                    del self._traces[trace_id]

    def _find(self, trace_id: int) -> _TraceRecord | None:
        record = self._traces.get(trace_id)
        if record is None and self._waited:
            return self._waited.get(trace_id)
        return record

    def _record(self, trace_id: int) -> _TraceRecord:
        traces = self._traces
        record = traces.get(trace_id)
        if record is None:
            # A record moves between the two dicts by being added to one before it leaves the
            # other: the end hook reads both without the lock and must always find it.
            aside = self._waited.get(trace_id) if self._waited else None
            traces[trace_id] = record = aside if aside is not None else _TraceRecord()
            if aside is not None:
                del self._waited[trace_id]
            if len(traces) > self._max_traces:
                evicted_id, evicted = next(iter(traces.items()))
                if evicted.waited_on:  # its events still wait for its root: keep it aside
                    self._waited[evicted_id] = evicted
                del traces[evicted_id]
        else:
            traces.move_to_end(trace_id)
        return record


MAX_WAITING_BYTES = 64 * 1024 * 1024
"""Bytes the records waiting for their conversation id may hold together (as
:func:`otel_greenflash._link.waiting.waiting_bytes` counts them): the bound that binds first,
``max_waiting`` (default 100,000) second. A waiting record keeps only what linking and mapping
read, but its ``greenflash.event.*`` values are the event itself and have no limit of their
own. An ordinary event (type, value, quality impact) counts 2.9 KB, so about 23,000 wait."""


@dataclass(slots=True)
class _Waiting(Generic[Waiter]):
    item: Waiter
    deadline: float
    size: int


class WaitingEvents(Generic[Waiter]):
    """Event spans waiting for their trace's conversation id. Used by the worker thread only.

    Holds at most ``max_waiting`` entries of at most ``max_bytes`` together (each entry's
    ``size`` is given by the caller); releasing an entry forgets it at once.
    """

    def __init__(
        self,
        max_waiting: int = 100_000,
        linger_seconds: float = 300.0,
        max_bytes: int = MAX_WAITING_BYTES,
    ) -> None:
        self.max_waiting = max_waiting
        self.linger_seconds = linger_seconds
        self.max_bytes = max_bytes
        self.bytes = 0
        """What the waiting entries hold together (their sizes as given to :meth:`park`)."""
        self._order: collections.OrderedDict[int, _Waiting[Waiter]] = collections.OrderedDict()
        self._by_trace: dict[int, list[int]] = {}
        self._sequence = itertools.count()

    def __len__(self) -> int:
        return len(self._order)

    def waits_on(self, trace_id: int) -> bool:
        """True while some entry of ``trace_id`` waits."""
        return trace_id in self._by_trace

    def park(self, item: Waiter, now: float, size: int = 0) -> list[Waiter]:
        """Make ``item`` (of ``size`` bytes) wait; return the items pushed out by the bounds,
        oldest first (to send unlinked now); ``item`` itself when it alone is over the bytes."""
        if size > self.max_bytes:  # would push out every other waiting event, and still not fit
            return [item]
        key = next(self._sequence)
        self._order[key] = _Waiting(item, now + self.linger_seconds, size)
        self._by_trace.setdefault(item.trace_id, []).append(key)
        self.bytes += size
        pushed_out: list[Waiter] = []
        while self._order and (len(self._order) > self.max_waiting or self.bytes > self.max_bytes):
            popped = self._pop_oldest()
            if popped is not None:
                pushed_out.append(popped)
        return pushed_out

    def release_trace(self, trace_id: int) -> list[Waiter]:
        """Stop waiting for every event of ``trace_id``."""
        released: list[Waiter] = []
        for key in self._by_trace.pop(trace_id, []):
            entry = self._order.pop(key)
            self.bytes -= entry.size
            released.append(entry.item)
        return released

    def release_expired(self, now: float) -> list[Waiter]:
        """Stop waiting for events whose linger deadline passed."""
        expired: list[Waiter] = []
        while self._order and next(iter(self._order.values())).deadline <= now:
            popped = self._pop_oldest()
            if popped is not None:
                expired.append(popped)
        return expired

    def release_all(self) -> list[Waiter]:
        items = [entry.item for entry in self._order.values()]
        self._order.clear()
        self._by_trace.clear()
        self.bytes = 0
        return items

    def _pop_oldest(self) -> Waiter | None:
        if not self._order:
            return None
        key, entry = self._order.popitem(last=False)
        self.bytes -= entry.size
        keys = self._by_trace[entry.item.trace_id]
        keys.remove(key)
        if not keys:
            del self._by_trace[entry.item.trace_id]
        return entry.item
