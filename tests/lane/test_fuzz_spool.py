"""Fuzz: hostile attribute sets through a real TracerProvider and a GreenflashSpanProcessor with
the durable spool on, delivered to the independent receiver.

Every generated case is one business event whose fate is known in advance — *valid* (hostile
text, 1 MB strings, 10k properties, JSON nested 100 levels: must arrive exactly once, its text
cleaned) or *invalid* (exactly one broken rule: must be counted, never sent) — or *chaos*
(anything at all: it must end in exactly one of sent or invalid). One processor serves every
example; totals are checked at the end. Nothing may raise into the application, and the spool
must stay on throughout.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.util.types import Attributes

from otel_greenflash import GreenflashSpanProcessor
from otel_greenflash import attributes as attr
from otel_greenflash.testing import validate_event_body
from tests.support.common import CONVERSATION_ID, PRODUCT_ID
from tests.support.independent_receiver import Receiver

Expect = Literal["valid", "invalid", "chaos"]

EXAMPLES = 250
CASES_PER_EXAMPLE = (40, 60)  # ≈ 12,500 attribute sets in all
SHARDS = 5  # each its own processor, spool and test (so parallel workers share them out)
EXAMPLES_PER_SHARD = EXAMPLES // SHARDS
HEAVY_EVERY = 10  # every 10th example also carries one of the HEAVY cases

P = attr.EVENT_PROPERTIES_PREFIX
MEGABYTE = "x" * (1 << 20)


def as_sent(text: str) -> str:
    """What the API must receive for ``text``: written independently of the library, as
    UTF-16 decoding with ``errors="replace"`` (pairs joined, lone surrogates → U+FFFD), NUL →
    U+FFFD."""
    units = text.encode("utf-16-le", "surrogatepass")
    return units.decode("utf-16-le", "replace").replace("\x00", "\ufffd")


def joined(text: str) -> str:
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le")


def nested_json(levels: int) -> str:
    """A properties object nested ``levels`` deep (the properties object is level 1)."""
    return '{"a":' * (levels - 1) + '{"leaf":"\\udcff"}' + "}" * (levels - 1)


@dataclass
class Case:
    name: str
    attributes: dict[str, Any]
    expect: Expect
    as_span_event: bool = False
    id_suffix: str | None = None
    """Give the event a custom insertId, ``fuzz-<n>-<suffix>``, unique in the run (unless it
    already has one); None: the default insertId, from its span."""
    checks: dict[str, str] = field(default_factory=dict)
    """Body fields whose text the API must see exactly (valid cases)."""


# --- strategies (cheap ones: about a dozen draws per case keeps 10k cases within seconds) ---

characters = st.one_of(
    st.characters(),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),  # lone surrogates
    st.sampled_from(["\x00", "\ud83d", "\ude00", "\ufffd", "\u202e", "\U0010ffff", "\n"]),
)
NASTY = ("\udcff", "\ud800", "\ud83d\ude00", "\x00", "a\x00b", "\ufffd", '"\\', "</script>")
texts = st.one_of(st.text(characters, max_size=12), st.sampled_from(NASTY))
non_blank_texts = texts.filter(lambda text: bool(text.strip()))
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
finite = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.one_of(texts, st.booleans(), int64, finite)
attribute_values = st.one_of(  # what the SDK keeps as it is
    scalars,
    st.lists(texts, max_size=3).map(tuple),
    st.lists(int64, max_size=3).map(tuple),
)
json_objects = st.one_of(
    st.dictionaries(texts, scalars, max_size=3),
    st.builds(lambda key, item: {key: [item, {key: item}]}, texts, scalars),
)


@st.composite
def decimal_texts(draw: st.DrawFn, *, exponent: bool = False, sign: bool = True) -> str:
    """Numbers as applications write them: ``149``, ``-0.5``, ``+7.``, ``.25``, ``1e6``."""
    whole = draw(st.sampled_from(["", "0", "007", "149"])) or str(draw(st.integers(0, 10**15)))
    text = (draw(st.sampled_from(["", "-", "+"])) if sign else "") + whole
    text += draw(st.sampled_from(["", ".", ".5", ".25", ".125", ".999", ".0000001"]))
    if exponent:
        text += draw(st.sampled_from(["", "", "e6", "E-3", "e+05"]))
    return draw(st.sampled_from([text, f" {text} "]))


VALUES: Mapping[str | None, st.SearchStrategy[Any]] = {
    "currency": st.one_of(
        st.integers(-(10**15), 10**15),
        st.floats(min_value=-1e12, max_value=1e12),
        decimal_texts(),
    ),
    "numeric": st.one_of(int64, finite, decimal_texts(exponent=True)),
    "count": st.one_of(
        st.integers(min_value=0, max_value=2**63 - 1),
        st.integers(0, 10**12).map(str),
        st.sampled_from(["+7", " 007 ", "0"]),
    ),
    "boolean": st.one_of(st.booleans(), st.sampled_from(["true", "FALSE", " True "])),
    "text": scalars,
    None: scalars,
}
OPTIONAL: Mapping[str, st.SearchStrategy[Any]] = {
    attr.EVENT_INFLUENCE: st.sampled_from(["positive", "NEGATIVE", " neutral "]),
    attr.EVENT_QUALITY_IMPACT_SCORE: st.floats(min_value=-1, max_value=1),
    attr.EVENT_SAMPLE_RATE: st.floats(min_value=0, max_value=1),
    attr.EVENT_FORCE_SAMPLE: st.booleans(),
    attr.EVENT_AT: st.sampled_from(["2026-05-01T12:00:00Z", "2026-05-01T12:00:00.5+02:00"]),
    attr.CONVERSATION_ID: st.just(CONVERSATION_ID.upper()),
    attr.CONVERSATION_EXTERNAL_ID: st.one_of(non_blank_texts, int64),
    attr.USER_EXTERNAL_ID: st.one_of(non_blank_texts, int64),
    attr.ORGANIZATION_EXTERNAL_ID: non_blank_texts,
    attr.EVENT_PROPERTIES: json_objects.map(json.dumps),
}


@st.composite
def valid_case(draw: st.DrawFn) -> Case:
    value_type = draw(st.sampled_from(list(VALUES)))
    value = draw(VALUES[value_type])
    event_type = draw(st.one_of(st.sampled_from(["upgrade", "signup"]), non_blank_texts))
    attributes: dict[str, Any] = {attr.EVENT_TYPE: event_type, attr.EVENT_VALUE: value}
    checks = {"eventType": as_sent(event_type)}
    if value_type is not None:
        spelling = draw(st.sampled_from(["lower", "upper", "title"]))
        attributes[attr.EVENT_VALUE_TYPE] = getattr(value_type, spelling)()
    if value_type in (None, "text") and isinstance(value, str):
        checks["value"] = as_sent(value)
    chosen = draw(st.integers(0, 2 ** len(OPTIONAL) - 1))
    for bit, (key, strategy) in enumerate(OPTIONAL.items()):
        if chosen >> bit & 1:
            attributes[key] = draw(strategy)
    external = attributes.get(attr.CONVERSATION_EXTERNAL_ID)
    if isinstance(external, str):
        checks["externalConversationId"] = as_sent(external)
    if draw(st.booleans()):
        attributes[P + (draw(texts) or "_")] = draw(attribute_values)
    if draw(st.booleans()):
        attributes["app." + draw(texts)] = draw(attribute_values)  # not ours: ignored
    suffix = draw(st.sampled_from([None, None, "", "é", "\U0001f600", "\ud83d\ude00"]))
    return Case(draw(texts), attributes, "valid", draw(st.booleans()), suffix, checks)


FAULTS: tuple[Mapping[str, Any], ...] = (
    {attr.EVENT_VALUE: math.nan},
    {attr.EVENT_VALUE: math.inf},
    {attr.EVENT_VALUE: "abc", attr.EVENT_VALUE_TYPE: "currency"},
    {attr.EVENT_VALUE: "1,000", attr.EVENT_VALUE_TYPE: "currency"},
    {attr.EVENT_VALUE: "-", attr.EVENT_VALUE_TYPE: "currency"},
    {attr.EVENT_VALUE: True, attr.EVENT_VALUE_TYPE: "currency"},
    {attr.EVENT_VALUE: "twelve", attr.EVENT_VALUE_TYPE: "numeric"},
    {attr.EVENT_VALUE: "NaN", attr.EVENT_VALUE_TYPE: "numeric"},
    {attr.EVENT_VALUE: -5, attr.EVENT_VALUE_TYPE: "count"},
    {attr.EVENT_VALUE: "2.5", attr.EVENT_VALUE_TYPE: "count"},
    {attr.EVENT_VALUE: "yes", attr.EVENT_VALUE_TYPE: "boolean"},
    {attr.EVENT_VALUE: 1, attr.EVENT_VALUE_TYPE: "boolean"},
    {attr.EVENT_VALUE_TYPE: "money"},
    {attr.EVENT_VALUE_TYPE: 3},
    {attr.EVENT_TYPE: "   "},
    {attr.EVENT_TYPE: 7},
    {attr.EVENT_INFLUENCE: "great"},
    {attr.EVENT_QUALITY_IMPACT_SCORE: 2.0},
    {attr.EVENT_QUALITY_IMPACT_SCORE: math.nan},
    {attr.EVENT_SAMPLE_RATE: -0.1},
    {attr.EVENT_FORCE_SAMPLE: "yes"},
    {attr.EVENT_AT: "yesterday"},
    {attr.PRODUCT_ID: "not-a-uuid"},
    {attr.CONVERSATION_ID: "\udcff"},
    {attr.USER_EXTERNAL_ID: 1.5},
    {attr.EVENT_PROPERTIES: "[1, 2]"},
    {attr.EVENT_PROPERTIES: "{"},
    {attr.EVENT_PROPERTIES: '{"a": NaN}'},
    {attr.EVENT_PROPERTIES: '{"a": 1e999}'},
    {attr.EVENT_PROPERTIES: '{"a": 18446744073709551616}'},
    {attr.EVENT_PROPERTIES: nested_json(101)},
    {attr.EVENT_PROPERTIES: nested_json(1000)},
    {P + "ratio": math.inf},
    {P + "big": 2**64},
    {P + "huge": 10**5000},  # kept by the SDK; JSON cannot carry it faithfully
    {attr.EVENT_VALUE: 10**5000},  # Python cannot even write it as text
    {attr.EVENT_INSERT_ID: "order-\udcff"},
    {attr.EVENT_INSERT_ID: "order-\ud800-x"},
    {attr.EVENT_INSERT_ID: "order-\x00"},
    {attr.EVENT_INSERT_ID: ""},
    {attr.EVENT_INSERT_ID: "  "},
)
MISSING_VALUE = -1


@st.composite
def invalid_case(draw: st.DrawFn) -> Case:
    """A valid case with exactly one rule broken."""
    base = draw(valid_case())
    fault = draw(st.sampled_from([MISSING_VALUE, *range(len(FAULTS))]))
    if fault == MISSING_VALUE:
        del base.attributes[attr.EVENT_VALUE]
    else:
        base.attributes.update(FAULTS[fault])
    return Case(base.name, base.attributes, "invalid", base.as_span_event, base.id_suffix)


CHAOS_KEYS = st.sampled_from(
    [
        attr.EVENT_VALUE,
        attr.EVENT_VALUE_TYPE,
        attr.EVENT_INFLUENCE,
        attr.EVENT_QUALITY_IMPACT_SCORE,
        attr.EVENT_SAMPLE_RATE,
        attr.EVENT_FORCE_SAMPLE,
        attr.EVENT_AT,
        attr.EVENT_PROPERTIES,
        *attr.ID_KEYS,
        "gen_ai.conversation.id",
        "user.id",
        P + "k",
        P,
    ]
)
chaos_values = st.one_of(
    attribute_values,
    st.binary(max_size=4),
    st.lists(st.one_of(texts, int64), max_size=3).map(tuple),  # mixed: the SDK may drop it
    st.integers(),  # beyond 64 bits too
    st.floats(),  # NaN and infinities too
)


@st.composite
def chaos_case(draw: st.DrawFn) -> Case:
    """Anything under any of our keys (its insertId stays the default: unique)."""
    attributes = draw(st.dictionaries(CHAOS_KEYS, chaos_values, max_size=8))
    attributes[attr.EVENT_TYPE] = draw(chaos_values)
    return Case(draw(texts), attributes, "chaos", draw(st.booleans()))


one_case = st.one_of(valid_case(), valid_case(), invalid_case(), chaos_case())
cases = st.lists(one_case, min_size=CASES_PER_EXAMPLE[0], max_size=CASES_PER_EXAMPLE[1])


def heavy_case(number: int) -> Case:
    """1 MB strings, 10k properties and deep JSON: too big to draw, so given (the
    ``number``-th of them, round robin)."""
    big = MEGABYTE[:-2] + "\udcff\x00"
    ten_thousand = json.dumps({f"p{index}\udcff": index for index in range(10_000)})
    valid = {attr.EVENT_TYPE: "heavy", attr.EVENT_VALUE: "1"}
    return [
        Case(big, {**valid, attr.EVENT_VALUE: big}, "valid", checks={"value": as_sent(big)}),
        Case("big property", {**valid, P + big[:1000]: big}, "valid"),
        Case("big insert id", valid, "valid", False, MEGABYTE),  # fuzz-<n>-xxx…
        Case("10k properties", {**valid, attr.EVENT_PROPERTIES: ten_thousand}, "valid"),
        Case("100 levels", {**valid, attr.EVENT_PROPERTIES: nested_json(100)}, "valid"),
        Case("101 levels", {**valid, attr.EVENT_PROPERTIES: nested_json(101)}, "invalid"),
        Case("1000 levels", {**valid, attr.EVENT_PROPERTIES: nested_json(1000)}, "invalid"),
        Case(
            "big and bad",
            {**valid, attr.EVENT_VALUE: big, attr.EVENT_INSERT_ID: big},
            "invalid",
            True,
        ),
    ][number % 8]


# --- the run --------------------------------------------------------------------------------


@dataclass
class Emitted:
    case: Case
    insert_id: str


class CountingIds(IdGenerator):
    """Hypothesis seeds ``random`` for every example, so the SDK's random ids would repeat
    across examples (and so would default insertIds): count instead."""

    def __init__(self) -> None:
        self._next = itertools.count(1)

    def generate_span_id(self) -> int:
        return next(self._next)

    def generate_trace_id(self) -> int:
        return next(self._next)


@pytest.mark.parametrize("shard", range(SHARDS))
def test_hostile_attribute_sets_through_the_spooled_processor(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture, shard: int
) -> None:
    """One shard of the examples; the shards' example numbers follow on from each other, so
    the heavy cases go round as in one run of all of them."""
    processor = GreenflashSpanProcessor(
        api_key=receiver.api_key,
        base_url=receiver.base_url,
        product_id=PRODUCT_ID,
        spool_dir=str(tmp_path / "spool"),
        schedule_delay_seconds=0.05,
        max_queue_size=100_000,  # the test's bursts must not be refused
        handle_sigterm=False,
    )
    provider = TracerProvider(id_generator=CountingIds(), shutdown_on_exit=False)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("fuzz")
    emitted: list[Emitted] = []
    examples = [shard * EXAMPLES_PER_SHARD]

    @settings(
        max_examples=EXAMPLES_PER_SHARD,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(cases)
    def run(drawn: list[Case]) -> None:
        examples[0] += 1
        if examples[0] % HEAVY_EVERY == 0:
            drawn = [*drawn, heavy_case(examples[0] // HEAVY_EVERY)]
        for case in drawn:
            custom = None
            if case.id_suffix is not None and attr.EVENT_INSERT_ID not in case.attributes:
                custom = f"fuzz-{len(emitted)}-{case.id_suffix}"
                case.attributes = {**case.attributes, attr.EVENT_INSERT_ID: custom}
            # The application's side: none of this may raise.
            if case.as_span_event:
                with tracer.start_as_current_span("carrier") as span:
                    span.add_event(attr.SPAN_EVENT_NAME, cast(Attributes, case.attributes))
                suffix = "-0"
            else:
                with tracer.start_as_current_span(case.name) as span:
                    span.set_attributes(case.attributes)
                suffix = ""
                if attr.EVENT_TYPE not in (cast(ReadableSpan, span).attributes or {}):
                    assert case.expect == "chaos"  # the SDK dropped its type: not an event
                    continue
            context = span.get_span_context()
            default = f"otel-{context.trace_id:032x}-{context.span_id:016x}{suffix}"
            emitted.append(Emitted(case, joined(custom) if custom else default))

    with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
        run()
        assert processor.force_flush(120_000)
        stats = processor.stats()
        processor.shutdown(10_000)

    by_kind: dict[Expect, set[str]] = {"valid": set(), "invalid": set(), "chaos": set()}
    for item in emitted:
        by_kind[item.case.expect].add(item.insert_id)
    assert (
        sum(map(len, by_kind.values())) == len(emitted) >= EXAMPLES_PER_SHARD * CASES_PER_EXAMPLE[0]
    )
    accepted = {str(event["insertId"]): event for event in receiver.accepted}
    chaos_sent = by_kind["chaos"] & set(accepted)

    # Every valid event delivered exactly once, no invalid one, every event counted once.
    assert receiver.duplicates == 0
    assert by_kind["valid"] <= set(accepted)
    assert not by_kind["invalid"] & set(accepted)
    assert set(accepted) == by_kind["valid"] | chaos_sent
    assert stats["queued"] == len(emitted)
    assert stats["sent"] == len(accepted)
    assert stats["invalid"] == len(by_kind["invalid"]) + len(by_kind["chaos"]) - len(chaos_sent)
    assert (stats["failed"], stats["dropped"]) == (0, {})
    # The spool stayed on (delivered rows leave it on the worker's next cycle: not 'pending').
    assert "pending" in stats["spool"]
    assert (stats["spool"]["rejected"], stats["spool"]["evicted"]) == (0, 0)

    # What arrived is valid, clean text, and says what the application said.
    for body in accepted.values():
        assert validate_event_body(body) == []
        text = json.dumps(body, ensure_ascii=False)
        text.encode("utf-8")  # no lone surrogate
        assert "\x00" not in text
    for item in emitted:
        if item.case.expect == "valid":
            body = accepted[item.insert_id]
            for name, expected in item.case.checks.items():
                assert body[name] == expected, name
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_the_fuzz_oracle_matches_the_documented_replacement() -> None:
    assert as_sent("a\udcffb\x00c\ud83d\ude00") == "a\ufffdb\ufffdc\U0001f600"
    assert joined("\ud83d\ude00") == "\U0001f600"
    assert json.loads(nested_json(3)) == {"a": {"a": {"leaf": "\udcff"}}}
    assert str(uuid.UUID(CONVERSATION_ID.upper())) == CONVERSATION_ID
