"""Zone serials only grow: unchanged content keeps its serial, changes always move forward."""

from __future__ import annotations

import datetime
import json
import random
import threading

import dns.serial
import pytest

from bind9_topology.config.digest import content_hash
from bind9_topology.dns.serials import (
    MAX_SERIAL_STEP,
    SERIAL_MODULUS,
    SerialState,
    SerialStore,
    date_serial,
    newest_serial,
    next_serial,
    serial_compare,
    serial_is_newer,
)

pytestmark = pytest.mark.unit

DAY = datetime.date(2024, 5, 17)


def h(n: int) -> str:
    return content_hash(f"content {n}")


def test_content_hash_is_sha256_hex_and_stable() -> None:
    assert content_hash("a") == content_hash("a")
    assert content_hash("a") != content_hash("b")
    assert len(content_hash("a")) == 64
    int(content_hash("a"), 16)


def test_first_serial_is_today_00() -> None:
    assert next_serial(None, h(1), DAY) == SerialState(2024051700, h(1))


def test_unchanged_hash_keeps_previous_even_on_a_later_day() -> None:
    prev = SerialState(2024051703, h(1))
    assert next_serial(prev, h(1), DAY) is prev
    assert next_serial(prev, h(1), DAY + datetime.timedelta(days=30)) is prev


def test_change_same_day_counts_up() -> None:
    s = next_serial(None, h(0), DAY)
    for n in range(1, 5):
        s = next_serial(s, h(n), DAY)
    assert s.serial == 2024051704


def test_day_rollover_resets_to_new_day_00() -> None:
    prev = SerialState(2024051742, h(1))
    nxt = next_serial(prev, h(2), DAY + datetime.timedelta(days=1))
    assert nxt == SerialState(2024051800, h(2))


def test_more_than_100_changes_a_day_keep_counting_into_tomorrow() -> None:
    s = next_serial(None, h(0), DAY)
    for n in range(1, 150):
        s2 = next_serial(s, h(n), DAY)
        assert s2.serial == s.serial + 1
        s = s2
    assert s.serial == 2024051700 + 149  # i.e. 2024051849: "tomorrow"'s numbers
    # tomorrow: today*100 (2024051800) is not larger -> keep counting
    tomorrow = next_serial(s, h(1000), DAY + datetime.timedelta(days=1))
    assert tomorrow.serial == s.serial + 1
    # the day after, the date scheme takes over again
    later = next_serial(tomorrow, h(1001), DAY + datetime.timedelta(days=2))
    assert later.serial == 2024051900


def test_clock_going_backwards_never_moves_serial_backwards() -> None:
    prev = SerialState(2024051705, h(1))
    nxt = next_serial(prev, h(2), DAY - datetime.timedelta(days=365))
    assert nxt.serial == 2024051706


def test_never_backwards_random_walk() -> None:
    rng = random.Random(1982)
    day = DAY
    s: SerialState | None = None
    for _ in range(2000):
        day = day + datetime.timedelta(days=rng.choice([-3, 0, 0, 0, 1, 40]))
        new = next_serial(s, h(rng.randrange(50)), day)
        if s is not None:
            if new.content_hash == s.content_hash:
                assert new == s
            else:
                assert serial_is_newer(new.serial, s.serial), (s, new, day)
        s = new


def test_wrap_around_2_32() -> None:
    prev = SerialState(SERIAL_MODULUS - 2, h(1))
    a = next_serial(prev, h(2), DAY)
    assert a.serial == SERIAL_MODULUS - 1
    b = next_serial(a, h(3), DAY)
    assert b.serial == 1  # 0 is skipped, 1 is still "greater" (RFC 1982)
    assert serial_is_newer(b.serial, a.serial)
    # after the wrap, a small serial below today*100 jumps forward to the date
    c = next_serial(b, h(4), DAY)
    assert c.serial == date_serial(DAY)
    assert serial_is_newer(c.serial, b.serial)


def test_never_more_than_2_31_minus_1_ahead() -> None:
    # in 2200 today*100 (2200010100) is numerically larger than serial 1, but more
    # than 2**31-1 ahead: secondaries would not see it as newer, so count instead
    day = datetime.date(2200, 1, 1)
    nxt = next_serial(SerialState(1, h(1)), h(2), day)
    assert nxt.serial == 2
    # ... while from a serial within reach the date scheme applies
    near = next_serial(SerialState(2200010100 - MAX_SERIAL_STEP, h(1)), h(2), day)
    assert near.serial == 2200010100
    # a date past the 32-bit range never produces an out-of-range serial
    far = next_serial(SerialState(7, h(1)), h(2), datetime.date(9999, 12, 31))
    assert far.serial == 8
    # a small serial (e.g. 1) today: the date is < 2**31 ahead, so it jumps
    tiny = next_serial(SerialState(1, h(1)), h(2), DAY)
    assert tiny.serial == date_serial(DAY)


def test_serial_is_newer_rfc1982() -> None:
    assert serial_is_newer(1, 0)
    assert serial_is_newer(0, SERIAL_MODULUS - 1)
    assert not serial_is_newer(5, 5)
    assert not serial_is_newer(4, 5)
    assert serial_is_newer(2**31 - 1, 0)
    assert not serial_is_newer(2**31, 0)  # undefined in RFC 1982 -> not newer


def test_state_rejects_out_of_range_serial() -> None:
    with pytest.raises(ValueError):
        SerialState(SERIAL_MODULUS, "x")
    with pytest.raises(ValueError):
        SerialState(-1, "x")


# -- the JSON store ----------------------------------------------------------


def test_store_roundtrip_and_advance(tmp_path) -> None:
    store = SerialStore(tmp_path / "state" / "serials.json")
    assert store.get("prod", "example.com") is None
    s1 = store.advance("prod", "example.com.", h(1), DAY)
    assert s1.serial == 2024051700
    assert store.get("prod", "Example.COM") == s1  # key normalized
    assert store.advance("prod", "example.com", h(1), DAY) == s1  # unchanged
    s2 = store.advance("prod", "example.com", h(2), DAY)
    assert s2.serial == 2024051701
    # other stacks are independent
    assert store.advance("prod-eu", "example.com", h(9), DAY).serial == 2024051700
    raw = json.loads((tmp_path / "state" / "serials.json").read_text())
    assert raw["serials"]["prod/example.com"] == {"serial": 2024051701, "content_hash": h(2)}
    # no temp files left behind
    leftovers = [p.name for p in (tmp_path / "state").iterdir()]
    assert sorted(leftovers) == ["serials.json", "serials.json.lock"]


def test_store_refuses_backwards_and_silent_change(tmp_path) -> None:
    store = SerialStore(tmp_path / "serials.json")
    store.put("prod", "example.com", SerialState(2024051705, h(1)))
    with pytest.raises(ValueError, match="backwards"):
        store.put("prod", "example.com", SerialState(2024051700, h(2)))
    with pytest.raises(ValueError, match="did not move"):
        store.put("prod", "example.com", SerialState(2024051705, h(2)))
    assert store.get("prod", "example.com") == SerialState(2024051705, h(1))


def test_store_malformed_file_is_a_clear_error(tmp_path) -> None:
    p = tmp_path / "serials.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        SerialStore(p).load()
    p.write_text('{"serials": {"prod/x": {"serial": "abc"}}}')
    with pytest.raises(ValueError, match="malformed"):
        SerialStore(p).load()


def test_store_concurrent_advances_hand_out_distinct_serials(tmp_path) -> None:
    store = SerialStore(tmp_path / "serials.json")
    results: list[int] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        st = SerialStore(tmp_path / "serials.json").advance("prod", "z.test", h(100 + i), DAY)
        with lock:
            results.append(st.serial)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert sorted(results) == list(range(2024051700, 2024051708))
    final = store.get("prod", "z.test")
    assert final is not None and final.serial == 2024051707


def test_serial_compare_agrees_with_dnspython() -> None:
    """RFC 1982 arithmetic here and dnspython's dns.serial (the oracle) agree, edges included."""
    rng = random.Random(1982)
    half = 2**31
    pairs = [(0, 0), (0, half), (half, 0), (0, half - 1), (0, half + 1), (2**32 - 1, 0),
             (0, 2**32 - 1), (5, 5 + half), (5 + half, 5)]
    pairs += [(rng.randrange(2**32), rng.randrange(2**32)) for _ in range(5000)]
    base = [rng.randrange(2**32) for _ in range(500)]
    pairs += [(b, (b + d) % 2**32) for b in base for d in (half - 1, half, half + 1, 1, -1)]
    for a, b in pairs:
        sa, sb = dns.serial.Serial(a), dns.serial.Serial(b)
        want = 0 if sa == sb else -1 if sa < sb else 1 if sa > sb else None
        if want is None:
            with pytest.raises(ValueError, match="not comparable"):
                serial_compare(a, b)
        else:
            assert serial_compare(a, b) == want, (a, b)


def test_newest_serial_is_the_rfc1982_maximum() -> None:
    """Random serials within 2**30 of each other (so every pair compares), wrap included:
    newest_serial picks what dnspython's dns.serial orders last; none gives None."""
    rng = random.Random(1982)
    assert newest_serial([]) is None
    for _ in range(500):
        base = rng.randrange(SERIAL_MODULUS)
        serials = [(base + rng.randrange(2**30)) % SERIAL_MODULUS
                   for _ in range(rng.randint(1, 8))]
        expected = max(serials, key=dns.serial.Serial)
        assert newest_serial(serials) == expected
        assert newest_serial(iter(serials)) == expected
