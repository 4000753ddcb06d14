"""The pieces under the booking apply: the strict codec for nested records, civil time, rules, tariff, the
simulated payment provider and PNR generation."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from store import civil, rules, tariff
from store.commands import (
    AddTrain,
    CancelBooking,
    CoachSpec,
    CommandDecodeError,
    ConfirmPayment,
    ExpireHolds,
    HoldSeats,
    PassengerSpec,
    RefundSettlement,
    ScheduleRuns,
    SettleRefunds,
    StopSpec,
    decode_command,
    encode_command,
)
from store.payments import DECLINED_CARD, INSUFFICIENT_FUNDS_CARD, TEST_CARD, SimulatedProvider, new_pnr

BASE = {"request_id": "r1", "client_id": "c1", "ts_ms": 1_780_000_000_000}
HOLD = HoldSeats(**BASE, token_sha256="b" * 64, pnr="K7M29XQ4AB", run_id=7, travel_class="AC3", from_code="NDLS",
                 to_code="BCT", passengers=(PassengerSpec(name="Asha", age=30, berth_pref="LOWER", seat="B1-5"),
                                            PassengerSpec(name="Ravi", age=4)), accept_waitlist=True)
SAMPLES = [
    HOLD,
    AddTrain(**BASE, token_sha256="a" * 64, number=12951, name="Mumbai Rajdhani", train_type="RAJDHANI",
             depart_time="17:00", stops=(StopSpec(station_code="BCT", arrive_min=0, depart_min=0, km=0),
                                         StopSpec(station_code="NDLS", arrive_min=932, depart_min=932, km=1386)),
             coaches=(CoachSpec(label="A1", travel_class="AC2", seats=48),
                      CoachSpec(label="E1", travel_class="AC1", seats=56, berths=("WINDOW", "AISLE")))),
    ScheduleRuns(**BASE, token_sha256="a" * 64, train_number=1, first_date="2026-06-01", last_date="2026-06-30"),
    ConfirmPayment(**BASE, token_sha256="b" * 64, pnr="K7M29XQ4AB", amount_paise=100, provider_ref="x",
                   approved=False, decline_reason="card declined"),
    CancelBooking(**BASE, token_sha256="b" * 64, pnr="K7M29XQ4AB", passenger_nos=(1, 3)),
    ExpireHolds(**BASE, now_ms=5),
    SettleRefunds(**BASE, settlements=(RefundSettlement(refund_id=1, provider_ref="sim_rf_1"),)),
]


@pytest.mark.parametrize("cmd", SAMPLES, ids=lambda c: type(c).__name__)
def test_booking_commands_round_trip(cmd) -> None:
    data = encode_command(cmd)
    assert decode_command(data) == cmd
    assert encode_command(decode_command(data)) == data


def test_nested_records_encode_as_objects() -> None:
    obj = json.loads(encode_command(HOLD))
    assert obj["passengers"][1] == {"age": 4, "berth_pref": "", "name": "Ravi", "seat": ""}
    assert obj["accept_waitlist"] is True and obj["t"] == "hold_seats"


def _mutated(change) -> bytes:
    obj = json.loads(encode_command(HOLD))
    change(obj)
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda o: o["passengers"][0].pop("age"), "HoldSeats.passengers[0] is missing field(s): age"),
        (lambda o: o["passengers"][0].update(vip=True), "HoldSeats.passengers[0] has unknown field(s): vip"),
        (lambda o: o["passengers"][1].update(age="4"), "HoldSeats.passengers[1].age must be an integer"),
        (lambda o: o.update(passengers={"name": "x"}), "HoldSeats.passengers must be a list"),
        (lambda o: o.update(passengers=["Asha"]), "HoldSeats.passengers[0] must be an object"),
        (lambda o: o.update(accept_waitlist=1), "HoldSeats.accept_waitlist must be true or false"),
        (lambda o: o.update(run_id=True), "HoldSeats.run_id must be an integer"),
        (lambda o: o.update(passengers=[o["passengers"][0]] * 1001), "more than 1000 items"),
        (lambda o: o["passengers"][0].update(name="a\x00b"), "must not contain NUL"),
    ],
)
def test_nested_decoding_is_strict(change, needle: str) -> None:
    with pytest.raises(CommandDecodeError) as info:
        decode_command(_mutated(change))
    assert needle in str(info.value)


def test_encoding_refuses_lists_and_wrong_records() -> None:
    with pytest.raises(CommandDecodeError, match="must be a tuple"):
        encode_command(CancelBooking(**BASE, token_sha256="b" * 64, pnr="K7M29XQ4AB", passenger_nos=[1]))  # type: ignore[arg-type]
    with pytest.raises(CommandDecodeError, match="must be a PassengerSpec"):
        encode_command(_hold_with(passengers=(StopSpec(station_code="X", arrive_min=0, depart_min=0, km=0),)))


def _hold_with(**changes) -> HoldSeats:
    fields = {f.name: getattr(HOLD, f.name) for f in dataclasses.fields(HoldSeats)}
    fields.update(changes)
    return HoldSeats(**fields)


# ============================================================================================= civil


@given(st.integers(min_value=civil.days_from_civil(2000, 1, 1), max_value=civil.days_from_civil(2199, 12, 31)))
def test_day_numbers_round_trip(days: int) -> None:
    assert civil.parse_date(civil.format_date(days)) == days


def test_civil_time_is_ist() -> None:
    assert civil.days_from_civil(1970, 1, 1) == 0 and civil.parse_date("2024-02-29") == 19782
    ms = civil.parse_datetime("2026-06-05 08:00")
    assert ms == 1_780_626_600_000  # 02:30 UTC
    assert civil.format_local(ms) == "2026-06-05 08:00" and civil.local_day(ms) == civil.parse_date("2026-06-05")
    assert civil.parse_datetime("2026-06-05 08:00:59") == ms  # seconds dropped
    assert civil.format_local_seconds(ms) == "2026-06-05 08:00:00"
    assert civil.local_day(civil.parse_datetime("2026-06-05 23:59")) == civil.parse_date("2026-06-05")
    assert civil.local_day(civil.parse_datetime("2026-06-06 00:00")) == civil.parse_date("2026-06-06")


@pytest.mark.parametrize("bad", ["2026-02-29", "2026-13-01", "1999-12-31", "2026-6-1", "today", "", None, 20260601])
def test_bad_dates(bad) -> None:
    with pytest.raises(ValueError):
        civil.parse_date(bad)


@pytest.mark.parametrize("bad", ["24:00", "12:60", "7:30", "noon", "2026-06-05 25:00", "2026-06-05 10:00:61"])
def test_bad_times(bad) -> None:
    with pytest.raises(ValueError):
        civil.parse_datetime(bad) if " " in bad else civil.parse_hhmm(bad)


# ============================================================================================= rules


def test_rules_helpers() -> None:
    now = civil.parse_datetime("2026-06-01 00:10")
    assert rules.validate_date_not_past("2026-06-01", now) == civil.parse_date("2026-06-01")
    with pytest.raises(ValueError, match="in the past"):
        rules.validate_date_not_past("2026-05-31", now)
    with pytest.raises(ValueError, match="at most 366"):
        rules.validate_date_range("2026-06-01", "2027-06-02", now)
    assert rules.normalize_pnr(" k7m2-9xq4 ab") == "K7M29XQ4AB"
    assert rules.normalize_train_type("Vande bharat") == "VANDE_BHARAT"
    assert rules.parse_seat_ref("B12-61") == ("B12", 61)
    for bad in ("B1-0", "b1-2", "B1", "B1-1000"):
        with pytest.raises(ValueError):
            rules.parse_seat_ref(bad)
    assert rules.parse_service_id("r12-ac2-ndls-bct") == (12, "AC2", "NDLS", "BCT")
    assert rules.encode_service_id(12, "AC2", "NDLS", "BCT") == "R12-AC2-NDLS-BCT"
    for bad in ("R0-AC2-A1-B1", "R1-FIRST-NDLS-BCT", "12-AC2-NDLS-BCT", "R1-AC2-NDLS", 7):
        with pytest.raises(ValueError):
            rules.parse_service_id(bad)
    for code in ("N", "NDLS1234", "ndls", "1ABC"):
        with pytest.raises(ValueError):
            rules.validate_station_code(code)


def test_tariff() -> None:
    assert tariff.fare_paise("SLEEPER", 10) == tariff.fare_paise("SLEEPER", 50) == 5_500  # minimum distance
    assert tariff.fare_paise("AC2", 1384) == 377_700  # 4,000 + 270 x 1,384 = 377,680 -> up to a whole rupee
    assert [tariff.refund_percent(100 * 3_600_000, t) for t in (0, 52 * 3_600_000, 96 * 3_600_000 + 1)] == [90, 50, 0]
    assert tariff.refund_paise(999, 50) == 499
    assert tariff.rupees(123456) == "₹1,234.56" and tariff.rupees(500) == "₹5"


# ========================================================================================== payments


def test_simulated_provider_is_idempotent_and_declines_test_cards() -> None:
    p = SimulatedProvider()
    ok = p.charge(idempotency_key="c1:r1", amount_paise=1000, card_number=TEST_CARD, description="PNR X")
    again = p.charge(idempotency_key="c1:r1", amount_paise=1000, card_number=TEST_CARD)
    assert ok.approved and ok == again and p.charged_paise == 1000
    assert SimulatedProvider().charge(idempotency_key="c1:r1", amount_paise=1000, card_number=TEST_CARD) == ok
    declined = p.charge(idempotency_key="c1:r2", amount_paise=1000, card_number=DECLINED_CARD)
    assert not declined.approved and declined.decline_reason == "card declined"
    assert p.charge(idempotency_key="c1:r3", amount_paise=1, card_number=INSUFFICIENT_FUNDS_CARD).decline_reason == \
        "insufficient funds"
    assert "16 digits" in p.charge(idempotency_key="c1:r4", amount_paise=1, card_number="4111").decline_reason
    assert p.charge(idempotency_key="c1:r5", amount_paise=1, card_number="4111 1111 1111 1111").approved
    r1 = p.refund(idempotency_key="refund:1", provider_ref=ok.provider_ref, amount_paise=900)
    assert p.refund(idempotency_key="refund:1", provider_ref=ok.provider_ref, amount_paise=900) == r1
    assert p.charged_paise == 1000 + 1 - 900


def test_new_pnrs_are_valid_and_random() -> None:
    pnrs = {new_pnr() for _ in range(200)}
    assert len(pnrs) == 200 and all(rules.validate_pnr(p) for p in pnrs)


# ========================================================================================== precheck

NOW = civil.parse_datetime("2026-06-01 09:00")
P = {"request_id": "r", "client_id": "c", "ts_ms": NOW}


def _with(cmd, **changes):
    fields = {f.name: getattr(cmd, f.name) for f in dataclasses.fields(cmd)}
    fields.update(changes)
    return type(cmd)(**fields)


def test_precheck_accepts_the_samples() -> None:
    for cmd in SAMPLES:
        rules.precheck(_with(cmd, ts_ms=NOW))


@pytest.mark.parametrize(
    ("cmd", "needle"),
    [
        (_with(HOLD, **P, passengers=HOLD.passengers * 4), "1 to 6 passengers"),
        (_with(HOLD, **P, passengers=(PassengerSpec(name="A", age=130),)), "age"),
        (_with(HOLD, **P, passengers=(PassengerSpec(name="A", age=3, seat="B1-5"),
                                      PassengerSpec(name="B", age=3, seat="B1-5"))), "chosen twice"),
        (_with(HOLD, **P, from_code="BCT"), "must differ"),
        (_with(HOLD, **P, from_code="bct"), "station code"),
        (_with(HOLD, **P, hold_seconds=5000), "hold duration"),
        (_with(HOLD, **P, run_id=0), "run id"),
        (_with(HOLD, **P, travel_class="FIRST"), "class must be"),
        (_with(SAMPLES[2], **P, first_date="2026-05-31"), "in the past"),
        (_with(SAMPLES[2], **P, last_date="2026-05-31"), "before first date"),
        (_with(SAMPLES[3], **P, approved=True, provider_ref=""), "provider reference"),
        (_with(SAMPLES[3], **P, amount_paise=0), "amount"),
        (_with(SAMPLES[4], **P, passenger_nos=(1, 1)), "twice"),
        (_with(SAMPLES[4], **P, passenger_nos=(7,)), "passenger number"),
        (_with(SAMPLES[5], **P, now_ms=NOW + 1), "now_ms"),
        (_with(SAMPLES[1], **P, depart_time="7:00"), "HH:MM"),
    ],
)
def test_precheck_refuses_bad_input(cmd, needle: str) -> None:
    with pytest.raises(ValueError) as info:
        rules.precheck(cmd)
    assert needle in str(info.value)


def test_apply_runs_the_same_precheck(tmp_path) -> None:
    """The apply answers a command that fails precheck with INVALID_ARGUMENT and precheck's own message."""
    from store import schema
    from store.state_machine import apply_batch

    conn = schema.connect(tmp_path / "p.db")
    bad = _with(HOLD, **P, passengers=HOLD.passengers * 4)
    with pytest.raises(ValueError) as info:
        rules.precheck(bad)
    [r] = apply_batch(conn, [(1, 0, encode_command(bad))])
    assert (r.code, r.message) == ("INVALID_ARGUMENT", str(info.value))
    conn.close()
