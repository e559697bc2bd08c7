"""Passwords out of URLs, wherever a URL holds one: ``user:password@`` and the ``password`` and ``sslpassword``
query parameters (libpq's and asyncpg's). Used for every message, log line and report that may show a database URL;
``RedactingFilter`` applies it to every log line of a ``moodring`` process."""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote, urlsplit, urlunsplit

#: Query parameters whose value is a secret (compared without case, after percent-decoding).
SECRET_QUERY_KEYS = frozenset({"password", "sslpassword"})
MASK = "***"
#: A URL inside free text: a scheme, ``://`` and everything up to whitespace, a quote or an angle bracket.
URL_IN_TEXT = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>`]+", re.IGNORECASE)


def _redacted(url: str, unparsable: str) -> str:
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username or ''}:{MASK}@{netloc.rsplit('@', 1)[1]}"
        query = "&".join(_redacted_pair(pair) for pair in parts.query.split("&")) if parts.query else parts.query
    except ValueError:
        return unparsable
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _redacted_pair(pair: str) -> str:
    key, equals, _ = pair.partition("=")
    return f"{key}={MASK}" if equals and unquote(key).strip().lower() in SECRET_QUERY_KEYS else pair


def redact_url(url: str) -> str:
    """A database URL with each password shown as ``***``, for messages, logs and the settings' repr; the URL itself
    when it holds none. One that cannot be parsed is not shown at all."""
    return _redacted(url, "the MOODRING_DATABASE URL")


def has_secret(url: str) -> bool:
    """Whether ``url`` holds a password anywhere ``redact_url`` hides one (or cannot be parsed to tell)."""
    return redact_url(url) != url


def redact_urls(text: str) -> str:
    """``text`` with every URL in it redacted (``redact_url``); an unparsable one becomes ``***``."""
    return URL_IN_TEXT.sub(lambda match: _redacted(match.group(0), MASK), text)


class RedactingFilter(logging.Filter):
    """A handler's filter that redacts URLs in each record's message and traceback before it is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        safe = redact_urls(message)
        if safe != message:
            record.msg, record.args = safe, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_urls(record.exc_text)
        return True


def redact_log_lines(logger: logging.Logger | None = None) -> None:
    """Add a ``RedactingFilter`` to each handler of ``logger`` (the root logger by default) that has none."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
