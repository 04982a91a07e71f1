import random
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

from services.classifier.context import (
    EVENT_UTC,
    STATE_JSON,
    CaseEntry,
    ContextStore,
    CustomerState,
    DemandEntry,
    apply_case_event,
    apply_label,
    event_utc_now,
    prune,
    prune_tail,
    record_demand,
    state_json,
)
from shared.events import DemandReceived
from shared.events.case import CaseEventType
from shared.kafka.codec import decode, encode
from tests.support.factories import case_event, demand_received

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


# Every case event here is about customer C1's case K1, about moving home unless told.
k1_event = partial(case_event, case_ref="K1", customer_ref="C1", purpose="moving home")


def test_an_opened_case_is_open_for_its_purpose() -> None:
    state = CustomerState()
    apply_case_event(state, k1_event(type=CaseEventType.OPENED, occurred_at=T0))

    context = state.as_context()

    assert [(c.ref, c.purpose, c.ref_kind) for c in context.open_cases] == [
        ("K1", "moving home", "case")
    ]
    assert context.recent_demands == []


def test_a_case_without_purpose_takes_the_purpose_of_its_demands() -> None:
    state = CustomerState()
    apply_case_event(state, k1_event(type=CaseEventType.OPENED, occurred_at=T0, purpose=None))
    record_demand(state, demand_id="D1", purpose="smart meter", occurred_at=T0, case_ref="K1")

    assert [c.purpose for c in state.as_context().open_cases] == ["smart meter"]


def test_fulfilment_marks_the_case_demands_fulfilled_and_closes_the_case() -> None:
    state = CustomerState()
    record_demand(state, demand_id="D1", purpose="moving home", occurred_at=T0, case_ref="K1")
    apply_case_event(
        state, k1_event(type=CaseEventType.FULFILLED, occurred_at=T0 + timedelta(days=2))
    )

    context = state.as_context()

    assert context.open_cases == []
    assert [(d.demand_id, d.fulfilled_at) for d in context.recent_demands] == [
        ("D1", T0 + timedelta(days=2))
    ]


def test_a_fulfilled_case_with_no_demand_seen_stands_in_as_the_earlier_demand() -> None:
    state = CustomerState()
    apply_case_event(state, k1_event(type=CaseEventType.OPENED, occurred_at=T0))
    apply_case_event(
        state, k1_event(type=CaseEventType.FULFILLED, occurred_at=T0 + timedelta(days=1))
    )

    [recent] = state.as_context().recent_demands

    assert (recent.demand_id, recent.ref_kind) == ("K1", "case")


def test_abandoned_cases_are_neither_open_nor_repeat_sources() -> None:
    state = CustomerState()
    apply_case_event(state, k1_event(type=CaseEventType.OPENED, occurred_at=T0))
    apply_case_event(
        state, k1_event(type=CaseEventType.ABANDONED, occurred_at=T0 + timedelta(days=1))
    )

    context = state.as_context()

    assert context.open_cases == []
    assert context.recent_demands == []


def test_reopening_opens_again() -> None:
    state = CustomerState()
    apply_case_event(state, k1_event(type=CaseEventType.FULFILLED, occurred_at=T0))
    apply_case_event(
        state, k1_event(type=CaseEventType.REOPENED, occurred_at=T0 + timedelta(days=3))
    )

    assert [c.opened_at for c in state.as_context().open_cases] == [T0 + timedelta(days=3)]


def test_the_same_demand_twice_is_recorded_once() -> None:
    state = CustomerState()
    for _ in range(2):
        record_demand(state, demand_id="D1", purpose="moving home", occurred_at=T0, case_ref=None)

    assert len(state.demands) == 1


def test_a_label_corrects_the_purpose_of_a_remembered_demand() -> None:
    state = CustomerState()
    record_demand(state, demand_id="D1", purpose="moving home", occurred_at=T0, case_ref=None)

    assert apply_label(state, demand_id="D1", purpose="smart meter")
    assert not apply_label(state, demand_id="D1", purpose="smart meter")
    assert not apply_label(state, demand_id="unknown", purpose="smart meter")
    assert state.demands[0].purpose == "smart meter"


def test_pruning_forgets_what_is_older_than_the_window_and_caps_the_rest() -> None:
    state = CustomerState()
    for day in range(10):
        record_demand(
            state,
            demand_id=f"D{day}",
            purpose="moving home",
            occurred_at=T0 + timedelta(days=day),
            case_ref=None,
        )

    prune(state, now=T0 + timedelta(days=9), window=timedelta(days=5), max_demands=3)

    assert [d.demand_id for d in state.demands] == ["D7", "D8", "D9"]


def test_pruning_refuses_a_clock_without_a_timezone() -> None:
    # astimezone would take a naive clock for local time and prune by the wrong hours.
    state = CustomerState()
    record_demand(state, demand_id="D", purpose="moving home", occurred_at=T0, case_ref=None)
    naive = (T0 + timedelta(days=9)).replace(tzinfo=None)

    for pruning in (prune, partial(prune_tail, demands_from=0, cases_from=0)):
        with pytest.raises(ValueError, match="timezone-aware"):
            pruning(state, now=naive, window=timedelta(days=5), max_demands=3)


def test_an_overlay_prunes_as_a_full_prune_after_every_update_would() -> None:
    # The overlay filters a customer's whole history on its first update in a batch and
    # only the entries appended since on the next ones: the outcome must be the same.
    window, cap, now = timedelta(days=5), 4, T0 + timedelta(days=9)
    stored = CustomerState()
    for day in range(8):  # D0..D3 are older than the window by now
        record_demand(
            stored,
            demand_id=f"D{day}",
            purpose="x",
            occurred_at=T0 + timedelta(days=day),
            case_ref=f"K{day}",
        )
    store = ContextStore(window=window, max_demands=cap)
    store.put("C1", 0, stored)
    overlay = store.overlay()
    expected = stored.copy_for_change()
    # Old and new demands in turn, a case event that fulfils one kept case, past the cap.
    for step, day in enumerate((0, 9, 1, 8, 9, 2, 9, 9)):
        state = overlay.state("C1", 0)
        for copy in (state, expected):
            record_demand(
                copy,
                demand_id=f"N{step}",
                purpose="y",
                occurred_at=T0 + timedelta(days=day),
                case_ref=f"M{step}",
            )
            if step == 4:
                apply_case_event(
                    copy,
                    k1_event(
                        case_ref="K7", type=CaseEventType.FULFILLED, occurred_at=now, purpose="x"
                    ),
                )
        overlay.update("C1", 0, state, now)
        prune(expected, now=now, window=window, max_demands=cap)

        assert overlay.changed["C1"] == expected


def test_an_overlay_changes_nothing_until_committed() -> None:
    store = ContextStore(window=timedelta(days=30))
    overlay = store.overlay()
    state = overlay.state("C1", 0)
    record_demand(state, demand_id="D1", purpose="moving home", occurred_at=T0, case_ref=None)
    overlay.update("C1", 0, state, T0)

    assert store.get("C1") is None
    assert overlay.customer_of_demand("D1") == "C1"

    overlay.commit()

    committed = store.get("C1")
    assert committed is not None
    assert [d.demand_id for d in committed.demands] == ["D1"]
    assert store.customer_of_demand("D1") == "C1"


def test_an_overlay_changes_no_committed_entry_until_committed() -> None:
    # The overlay's copy shares its entries with the committed state: a case event or a
    # label must change a copy of the entry, never the entry itself.
    store = ContextStore(window=timedelta(days=30))
    committed = CustomerState()
    apply_case_event(committed, k1_event(type=CaseEventType.OPENED, occurred_at=T0))
    for demand_id in ("D1", "D2"):
        record_demand(
            committed, demand_id=demand_id, purpose="moving home", occurred_at=T0, case_ref="K1"
        )
    store.put("C1", 0, committed)
    overlay = store.overlay()

    state = overlay.state("C1", 0)
    apply_label(state, demand_id="D1", purpose="smart meter")
    apply_case_event(state, k1_event(type=CaseEventType.FULFILLED, occurred_at=T0, purpose="x"))
    overlay.update("C1", 0, state, T0)

    kept = store.get("C1")
    assert kept is not None
    assert [(c.status, c.purpose) for c in kept.cases] == [("open", "moving home")]
    assert [(d.purpose, d.fulfilled_at) for d in kept.demands] == [("moving home", None)] * 2
    overlay.commit()
    changed = store.get("C1")
    assert changed is not None
    assert [(c.status, c.purpose) for c in changed.cases] == [("fulfilled", "x")]
    assert [(d.purpose, d.fulfilled_at) for d in changed.demands] == [
        ("smart meter", T0),
        ("moving home", T0),
    ]


def test_dropping_a_partition_forgets_its_customers_only() -> None:
    store = ContextStore(window=timedelta(days=30))
    overlay = store.overlay()
    for customer, partition in (("C1", 0), ("C2", 1)):
        state = overlay.state(customer, partition)
        record_demand(state, demand_id=customer + "-D", purpose="x", occurred_at=T0, case_ref=None)
        overlay.update(customer, partition, state, T0)
    overlay.commit()

    assert store.drop_partitions({0}) == 1

    assert store.get("C1") is None
    assert store.get("C2") is not None
    assert store.customer_of_demand("C1-D") is None


def test_a_sources_demand_is_judged_against_that_sources_demands_and_cases_only() -> None:
    """A demand is (source, id) and a case (source, case_ref) (issue 10, item 12): demo's
    open case K1 and demand D1 are not genesys's, though the customer ref is the same."""
    state = CustomerState()
    apply_case_event(state, k1_event(type=CaseEventType.OPENED, occurred_at=T0, source="demo"))
    record_demand(
        state, demand_id="D1", purpose="moving home", occurred_at=T0, case_ref=None, source="demo"
    )
    genesys = state.as_context("genesys")
    assert (genesys.open_cases, genesys.recent_demands) == ([], [])
    demo = state.as_context("demo")
    assert [c.ref for c in demo.open_cases] == ["K1"]
    assert [d.demand_id for d in demo.recent_demands] == ["D1"]
    # genesys's own D1 is another demand, and its case K1 another case.
    record_demand(
        state, demand_id="D1", purpose="billing", occurred_at=T0, case_ref="K1", source="genesys"
    )
    assert [(d.source, d.purpose) for d in state.demands] == [
        ("demo", "moving home"),
        ("genesys", "billing"),
    ]
    assert [(c.source, c.purpose) for c in state.cases] == [
        ("demo", "moving home"),
        ("genesys", "billing"),
    ]


def test_a_label_corrects_only_its_sources_demand() -> None:
    state = CustomerState()
    for source in ("demo", "genesys"):
        record_demand(
            state, demand_id="D1", purpose="moving home", occurred_at=T0, case_ref=None,
            source=source,
        )  # fmt: skip
    assert apply_label(state, demand_id="D1", purpose="billing", source="genesys")
    assert [(d.source, d.purpose) for d in state.demands] == [
        ("demo", "moving home"),
        ("genesys", "billing"),
    ]
    store = ContextStore(window=timedelta(days=30))
    store.put("C1", 0, state)
    store.put("C2", 1, CustomerState(demands=[replace(state.demands[0])]))
    assert store.customer_of_demand("D1", "genesys") == "C1"
    # An old label without a source: two customers have a D1, so it names neither.
    assert store.customer_of_demand("D1", None) is None


def test_the_changelog_json_is_pydantics_byte_for_byte_through_every_change() -> None:
    # state_json writes each entry once and keeps its JSON: it must still be what STATE_JSON
    # writes after every change a batch makes (a changed entry kept stale JSON would restore
    # the old value after a restart).
    store = ContextStore(window=timedelta(days=30), max_demands=3)
    committed = CustomerState()
    apply_case_event(committed, k1_event(type=CaseEventType.OPENED, occurred_at=T0))
    record_demand(committed, demand_id="D1", purpose="moving home", occurred_at=T0, case_ref="K1")
    record_demand(
        committed,
        demand_id="D2",
        purpose='a "quoted" café / ünïcode',
        occurred_at=T0 + timedelta(microseconds=1),
        case_ref=None,
        source="crm",
    )
    assert state_json(committed) == STATE_JSON.dump_json(committed)
    store.put("C1", 0, committed)

    changes: list[Callable[[CustomerState], object]] = [
        partial(apply_label, demand_id="D1", purpose="smart meter"),
        lambda s: apply_case_event(
            s, k1_event(type=CaseEventType.FULFILLED, occurred_at=T0 + timedelta(hours=1))
        ),
        partial(
            record_demand,
            demand_id="D3",
            purpose="billing",
            occurred_at=T0 + timedelta(hours=2),
            case_ref="K2",
        ),
        partial(
            record_demand,
            demand_id="D4",  # past the cap of 3: the oldest demand goes
            purpose="billing",
            occurred_at=T0 + timedelta(hours=3),
            case_ref=None,
        ),
        lambda s: apply_case_event(
            s, k1_event(type=CaseEventType.REOPENED, occurred_at=T0 + timedelta(hours=4))
        ),
    ]
    for change in changes:  # one batch per change, each written, then committed
        overlay = store.overlay()
        state = overlay.state("C1", 0)
        change(state)
        overlay.update("C1", 0, state, T0 + timedelta(days=1))
        written = state_json(state)
        assert written == STATE_JSON.dump_json(state)
        assert STATE_JSON.validate_json(written) == state
        overlay.commit()
    kept = store.get("C1")
    assert kept is not None
    assert [d.demand_id for d in kept.demands] == ["D2", "D3", "D4"]
    assert state_json(kept) == STATE_JSON.dump_json(kept)


def test_pruning_keeps_what_the_plain_filter_keeps() -> None:
    # prune rebuilds its lists only when something goes; held to the plain filter (a demand
    # stays while it or its fulfilment is within the window; a case while it changed within)
    # on entries on both sides of the horizon and at it, fulfilled or not, under and over the cap.
    rng = random.Random(7)
    now, window = T0 + timedelta(days=40), timedelta(days=30)
    horizon = now - window
    offsets = [timedelta(days=d) for d in (-3, -1, 0, 1, 5)] + [timedelta(microseconds=-1)]
    for _ in range(300):
        state = CustomerState()
        for i in range(rng.randrange(8)):
            occurred = horizon + rng.choice(offsets)
            fulfilled = horizon + rng.choice(offsets) if rng.random() < 0.4 else None
            state.demands.append(
                DemandEntry(
                    demand_id=f"D{i}", purpose="p", occurred_at=occurred, fulfilled_at=fulfilled
                )
            )
            changed = horizon + rng.choice(offsets)
            state.cases.append(CaseEntry(ref=f"K{i}", opened_at=changed, changed_at=changed))
        cap = rng.choice([2, 5, 50])
        demands = [
            d
            for d in state.demands
            if max(d.occurred_at, d.fulfilled_at or d.occurred_at) >= horizon
        ][-cap:]
        cases = [c for c in state.cases if c.changed_at >= horizon][-cap:]

        prune(state, now=now, window=window, max_demands=cap)

        assert state.demands == demands
        assert state.cases == cases


def test_the_demand_index_is_the_stored_states_through_every_kind_of_change() -> None:
    # put indexes only the demands appended when none went (the usual batch), else it
    # indexes the state afresh: held to the states themselves after every commit, through
    # new demands, labels, fulfilments, the window, the cap, emptied states and dropped
    # partitions, over every demand ever seen (a stale entry and a missing one both fail).
    rng = random.Random(11)
    store = ContextStore(window=timedelta(days=3), max_demands=4)
    customers = [f"C{i}" for i in range(6)]
    seen: set[tuple[str, str]] = set()
    now = T0
    for step in range(400):
        now += timedelta(hours=rng.choice([0, 1, 6, 30]))
        overlay = store.overlay()
        for customer in rng.sample(customers, rng.randrange(1, 4)):
            partition = int(customer[1:]) % 3
            state = overlay.state(customer, partition)
            move = rng.random()
            known = [d for d in state.demands if d.source is not None]
            if move < 0.15 and known:
                demand = rng.choice(known)
                apply_label(
                    state, demand_id=demand.demand_id, purpose=f"p{step}", source=demand.source
                )
            elif move < 0.25 and known:
                apply_case_event(
                    state,
                    case_event(
                        case_ref=f"K{customer}",
                        customer_ref=customer,
                        type=CaseEventType.FULFILLED,
                        occurred_at=now,
                        source=rng.choice(known).source,
                    ),
                )
            else:
                for n in range(rng.randrange(1, 3)):
                    source = rng.choice(["crm", "web"])
                    record_demand(
                        state,
                        demand_id=f"D{step}-{n}-{customer}",
                        purpose="x",
                        occurred_at=now - timedelta(hours=rng.choice([0, 0, 50, 80])),
                        case_ref=f"K{customer}" if rng.random() < 0.5 else None,
                        source=source,
                    )
                    seen.add((source, f"D{step}-{n}-{customer}"))
            overlay.update(customer, partition, state, now)
        overlay.commit()
        if step % 97 == 96:
            store.drop_partitions({rng.randrange(3)})

        for source, demand_id in seen:
            holders = [
                c
                for c in customers
                if (s := store.get(c)) is not None and s.demand(demand_id, source) is not None
            ]
            assert store.customer_of_demand(demand_id, source) == (holders[0] if holders else None)


def test_the_handlers_clock_and_the_decoded_events_share_one_utc_tzinfo() -> None:
    # Pruning compares every entry's times with a horizon from the handler's clock: across
    # two tzinfo objects each comparison calls utcoffset() on both (~60 times slower).
    event = decode(DemandReceived, encode(demand_received(), topic="t", source="test").value)

    assert event.occurred_at.tzinfo is EVENT_UTC
    assert event_utc_now().tzinfo is EVENT_UTC
    horizon_of = partial(prune, window=timedelta(days=1), max_demands=5)
    state = CustomerState(
        demands=[DemandEntry(demand_id="D1", purpose="x", occurred_at=event.occurred_at)]
    )
    horizon_of(state, now=event.occurred_at.astimezone(UTC) + timedelta(days=1))
    assert [d.demand_id for d in state.demands] == ["D1"]  # at the horizon: kept
    horizon_of(state, now=event.occurred_at + timedelta(days=1, microseconds=1))
    assert state.demands == []
