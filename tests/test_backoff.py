"""bot.backoff.Backoff: waits of 1, 2, 4... intervals up to a cap, one warning per outage, one line when it ends."""

from __future__ import annotations

import logging
import sqlite3

import pytest

from bot.backoff import Backoff

log = logging.getLogger("test.backoff")


def test_waits_double_up_to_the_cap_and_reset_on_success(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    backoff = Backoff("writing things", log, cap=8, expected=(sqlite3.Error,), clock=lambda: now[0])
    with caplog.at_level(logging.DEBUG, logger="test.backoff"):
        waits = []
        for _ in range(6):
            waits.append(backoff.failed(sqlite3.OperationalError("disk I/O error")))
            now[0] += 10
        assert waits == [1, 2, 4, 8, 8, 8] and backoff.failing
        backoff.succeeded(detail="; 3 dropped")
        assert not backoff.failing and backoff.failed(sqlite3.OperationalError("again")) == 1
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage().split(";")[0] for r in warnings] == [
        "writing things failed: disk I/O error (OperationalError)",
        "writing things failed: again (OperationalError)",  # a new outage, a new warning
    ]
    assert all(r.exc_info is None for r in warnings)  # an expected error: one line, no traceback
    (recovered,) = [r for r in caplog.records if "works again" in r.getMessage()]
    assert recovered.getMessage() == "writing things works again after 6 failed attempts over 60.0 s; 3 dropped"
    assert backoff.total_failures == 7


def test_skip_lets_ticks_pass_after_failures() -> None:
    backoff = Backoff("ticking", log, cap=4)
    pattern = []
    for _ in range(4):
        backoff.failed(RuntimeError("no"))
        skipped = 0
        while backoff.skip():
            skipped += 1
        pattern.append(skipped)
    assert pattern == [0, 1, 3, 3]  # the next try comes 1, 2, 4, 4 ticks later
    backoff.succeeded()
    assert not backoff.skip()


def test_an_unexpected_error_is_logged_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    backoff = Backoff("ticking", log, cap=4, expected=(sqlite3.Error,))
    try:
        raise KeyError("bug")
    except KeyError as error:
        with caplog.at_level(logging.WARNING, logger="test.backoff"):
            backoff.failed(error)
    (record,) = caplog.records
    assert record.exc_info is not None and record.exc_info[1].args == ("bug",)
