"""Back-off and quiet logging for the bot's background loops, so that a failing disk or database never ends a
loop and never floods the log."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

__all__ = ["Backoff"]


class Backoff:
    """The consecutive failures of one background loop, counted in the loop's own intervals.

    ``failed(error)`` returns how many intervals to wait before the next try: 1, 2, 4, ... up to ``cap``. It
    logs one warning when an outage begins (the error in one line; with its traceback only for errors that are
    not ``expected``), and further failures of the same outage only at DEBUG. ``succeeded()`` logs one line
    when an outage ends. A loop with a fixed tick (``discord.ext.tasks``) asks ``skip()`` at each tick instead
    of sleeping.
    """

    def __init__(
        self,
        what: str,
        logger: logging.Logger,
        *,
        cap: int,
        expected: tuple[type[BaseException], ...] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if cap < 1:
            raise ValueError("cap must be at least 1 interval")
        self.what = what
        self.log = logger
        self.cap = cap
        self.expected = expected
        self.clock = clock
        self.failures = 0  # in a row, in the current outage
        self.total_failures = 0
        self._since = 0.0
        self._skip = 0

    @property
    def failing(self) -> bool:
        """An outage is going on: the last try failed."""
        return self.failures > 0

    def failed(self, error: BaseException, consequence: str = "") -> int:
        """Count a failure; the number of intervals to wait before the next try."""
        self.failures += 1
        self.total_failures += 1
        wait = min(2 ** min(self.failures - 1, 30), self.cap)
        self._skip = wait - 1
        if self.failures == 1:
            self._since = self.clock()
            self.log.warning(
                "%s failed: %s (%s)%s; retrying with back-off, and no further warnings during this outage",
                self.what,
                error,
                type(error).__name__,
                consequence,
                exc_info=None if isinstance(error, self.expected) else error,
            )
        else:
            self.log.debug("%s failed again (%d in a row): %s", self.what, self.failures, error)
        return wait

    def succeeded(self, detail: str = "") -> None:
        """Count a success; ends an outage with one line."""
        if not self.failures:
            return
        self.log.info(
            "%s works again after %d failed attempts over %.1f s%s",
            self.what,
            self.failures,
            self.clock() - self._since,
            detail,
        )
        self.failures = 0
        self._skip = 0

    async def tick(self, work: Callable[[], Awaitable[object]]) -> None:
        """One tick of a loop with a fixed tick: nothing while ``skip()`` says so, else ``work()``, whose failure is
        counted (``failed``) and never raised, so the loop never ends."""
        if self.skip():
            return
        try:
            await work()
        except Exception as error:
            self.failed(error)
        else:
            self.succeeded()

    def skip(self) -> bool:
        """For a loop with a fixed tick: True while it should let ticks pass after a failure."""
        if self._skip > 0:
            self._skip -= 1
            return True
        return False
