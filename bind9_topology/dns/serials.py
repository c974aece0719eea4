"""Zone serials that only ever grow.

A serial is derived from the previous serial and a hash of the zone's
content (the text without its serial), never from the clock alone: the same
content gives the same serial, so a preview with no change shows no diff.
When content changes the serial becomes ``YYYYMMDDnn`` for today, or simply
the previous serial + 1 when that would not be greater (more than 100
changes in a day, a clock that went backwards, a serial from another scheme
that is already numerically larger). "Greater" is RFC 1982 serial
arithmetic: the new serial is always 1 .. 2**31-1 ahead of the old one, so
every secondary sees it as newer, including across the 2**32 wrap.

Pure: no Pulumi, no dnspython. :class:`SerialStore` is a small JSON file
store for the CLI and the local runner, where there is no Pulumi state.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

SERIAL_MODULUS = 2**32
#: the largest step that is still "greater" in RFC 1982 serial arithmetic
MAX_SERIAL_STEP = 2**31 - 1


@dataclass(frozen=True)
class SerialState:
    serial: int
    content_hash: str

    def __post_init__(self) -> None:
        if not 0 <= self.serial < SERIAL_MODULUS:
            raise ValueError(f"serial {self.serial} is not a 32-bit unsigned integer")


def serial_is_newer(new: int, old: int) -> bool:
    """RFC 1982: is *new* strictly greater than *old*?"""
    step = (new - old) % SERIAL_MODULUS
    return 0 < step <= MAX_SERIAL_STEP


def serial_compare(a: int, b: int) -> int:
    """-1, 0 or 1 as serial *a* is before, equal to or after *b* (RFC 1982).

    Raises ValueError when the comparison is undefined (the two are exactly
    2**31 apart). dnspython's ``dns.serial.Serial`` is the oracle in the tests.
    """
    if a == b:
        return 0
    step = (a - b) % SERIAL_MODULUS
    if 0 < step <= MAX_SERIAL_STEP:
        return 1
    if step > MAX_SERIAL_STEP + 1:
        return -1
    raise ValueError(f"serials {a} and {b} are not comparable (RFC 1982: 2**31 apart)")


def serial_at_least(served: int, expected: int) -> bool:
    """True when *served* is *expected* or later in serial arithmetic."""
    try:
        return serial_compare(served, expected) >= 0
    except ValueError:
        return False


def serial_compare_safe(a: int, b: int) -> int:
    """Like :func:`serial_compare`, but an undefined comparison counts as -1 (behind)."""
    try:
        return serial_compare(a, b)
    except ValueError:
        return -1


def newest_serial(serials: Iterable[int]) -> int | None:
    """The newest of *serials* in RFC 1982 arithmetic (None for none); of two that cannot
    be compared (2**31 apart) the one seen first stays."""
    newest: int | None = None
    for serial in serials:
        if newest is None or serial_compare_safe(serial, newest) > 0:
            newest = serial
    return newest


def date_serial(day: datetime.date, counter: int = 0) -> int:
    """``YYYYMMDDnn`` for *day*."""
    return (day.year * 10000 + day.month * 100 + day.day) * 100 + counter


def next_serial(
    previous: SerialState | None, content_hash: str, today: datetime.date
) -> SerialState:
    """The serial for a zone whose content now hashes to *content_hash*.

    * same hash as before: *previous*, unchanged;
    * no previous state: today's ``YYYYMMDD00``;
    * otherwise today's ``YYYYMMDD00`` if that is numerically larger than the
      previous serial and newer in serial arithmetic, else previous + 1
      (mod 2**32, skipping 0, which several tools treat as "no serial").
    """
    if previous is not None and previous.content_hash == content_hash:
        return previous
    base = date_serial(today)
    if previous is None:
        return SerialState(base, content_hash)
    old = previous.serial
    if old < base < SERIAL_MODULUS and serial_is_newer(base, old):
        new = base
    else:
        new = (old + 1) % SERIAL_MODULUS
        if new == 0:
            new = 1
    assert serial_is_newer(new, old)
    return SerialState(new, content_hash)


def past_served(
    previous: SerialState | None, state: SerialState, served: int | None
) -> SerialState:
    """*state*, moved past *served* (the highest serial a server of the zone serves) when
    it is not newer than that.

    A serial equal to the served one is kept only when nothing changed (*state* is
    *previous*: this store handed out that serial for this content); a new serial equal
    to a served one would be the same serial with other content, which secondaries never
    transfer (RFC 1982: not newer), so it moves past as well.
    """
    if served is None or serial_is_newer(state.serial, served):
        return state
    if state == previous and state.serial == served:
        return state
    new = (served + 1) % SERIAL_MODULUS or 1
    return SerialState(new, state.content_hash)


def _zone_key(stack: str, zone: str) -> str:
    if not stack or "/" in stack:
        raise ValueError(f"stack name {stack!r} must be non-empty and contain no '/'")
    z = zone.strip().rstrip(".").lower()
    if not z:
        raise ValueError("zone name is empty")
    return f"{stack}/{z}"


class SerialStore:
    """JSON file mapping ``"<stack>/<zone>"`` to a :class:`SerialState`.

    Writes are atomic (temp file in the same directory, fsync, ``os.replace``)
    and read-modify-write cycles hold an exclusive ``flock`` on a sidecar
    ``<path>.lock`` so two runners cannot hand out the same serial. A put that
    would move a serial backwards is refused.
    """

    VERSION = 1

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    # -- reading -----------------------------------------------------------

    def load(self) -> dict[str, SerialState]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"{self.path}: not valid JSON ({exc})") from exc
        if not isinstance(raw, dict) or not isinstance(raw.get("serials"), dict):
            raise ValueError(f"{self.path}: expected an object with a 'serials' object")
        out: dict[str, SerialState] = {}
        for key, value in raw["serials"].items():
            try:
                out[key] = SerialState(int(value["serial"]), str(value["content_hash"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{self.path}: serials[{key!r}] is malformed ({exc})") from exc
        return out

    def get(self, stack: str, zone: str) -> SerialState | None:
        return self.load().get(_zone_key(stack, zone))

    # -- writing -----------------------------------------------------------

    def put(self, stack: str, zone: str, state: SerialState) -> None:
        key = _zone_key(stack, zone)
        with self._locked():
            data = self.load()
            self._check_forward(key, data.get(key), state)
            data[key] = state
            self._write(data)

    def advance(
        self, stack: str, zone: str, content_hash: str, today: datetime.date | None = None,
        served: int | None = None,
    ) -> SerialState:
        """Next serial for the zone's content, stored and returned (one locked cycle).

        *served*: the highest serial the zone's servers serve (or will load) now. The
        result moves past it (:func:`past_served`), so a store that fell behind its
        servers (deleted, restored, another runner) recovers instead of handing out a
        serial the secondaries see as older.
        """
        key = _zone_key(stack, zone)
        day = today or datetime.date.today()
        with self._locked():
            data = self.load()
            previous = data.get(key)
            state = past_served(previous, next_serial(previous, content_hash, day), served)
            if state != previous:
                data[key] = state
                self._write(data)
            return state

    @staticmethod
    def _check_forward(key: str, old: SerialState | None, new: SerialState) -> None:
        if old is None or old.serial == new.serial:
            if old is not None and old.content_hash != new.content_hash:
                raise ValueError(f"{key}: content changed but serial {new.serial} did not move")
            return
        if not serial_is_newer(new.serial, old.serial):
            raise ValueError(
                f"{key}: refusing to move serial backwards ({old.serial} -> {new.serial})"
            )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _write(self, data: dict[str, SerialState]) -> None:
        payload = {
            "version": self.VERSION,
            "serials": {
                k: {"serial": v.serial, "content_hash": v.content_hash}
                for k, v in sorted(data.items())
            },
        }
        text = json.dumps(payload, indent=2, sort_keys=True) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
