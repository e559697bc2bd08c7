"""The rate limits on what members ask of the bot: readings (per member and per channel) and corrections (per member).

One kind of limit serves both: discord.py cooldown buckets (fixed windows), one mapping per scope.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from discord.ext import commands


@dataclass(frozen=True)
class Refusal:
    """A request refused by a limit: `scope` names the limit; `warn` is true for the first refusal of its window."""

    scope: str
    retry_after: float
    warn: bool


class RateLimits:
    """At most `rates[scope]` requests per `window` seconds for each id of each scope (a member, a channel).

    `check` takes one token from the bucket of every scope, or none: a request refused by one scope's limit does not
    use up the others'. The scopes are checked in the order they were given. Each window of a bucket gets at most one
    refusal with `warn` set, so that a flood gets one "slow down".
    """

    def __init__(self, window: float, clock: Callable[[], float], **rates: int) -> None:
        self.clock = clock
        self.scopes = {
            scope: commands.CooldownMapping.from_cooldown(rate, window, lambda key: key)
            for scope, rate in rates.items()
        }
        self._warned: dict[tuple[str, int], float] = {}  # (scope, id) -> end of the window already warned

    def check(self, **ids: int) -> Refusal | None:
        """None when the request may go ahead (and is counted), else why not; `ids` holds one id for every scope."""
        if ids.keys() != self.scopes.keys():
            raise TypeError(f"check needs one id for each of {', '.join(self.scopes)}, got {', '.join(ids)}")
        now = self.clock()
        buckets = {scope: mapping.get_bucket(ids[scope], now) for scope, mapping in self.scopes.items()}
        for scope, bucket in buckets.items():
            if bucket.get_tokens(now) == 0:
                return self._refuse(scope, ids[scope], bucket.get_retry_after(now), now)
        for bucket in buckets.values():
            bucket.update_rate_limit(now)
        return None

    def _refuse(self, scope: str, key: int, retry_after: float, now: float) -> Refusal:
        self._warned = {k: until for k, until in self._warned.items() if until > now}  # forget ended windows
        if (scope, key) in self._warned:
            return Refusal(scope, retry_after, warn=False)
        self._warned[(scope, key)] = now + retry_after
        return Refusal(scope, retry_after, warn=True)
