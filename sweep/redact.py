"""Service URLs without their secrets: what the sweep records or prints, and what a spec may hold.

A sweep on a cluster talks to an Optuna database (``postgresql+psycopg://user@host/db``) and an
MLflow tracking server (``http://host:5000``). Their passwords never belong in a spec, a
``--set``, ``sweep.json``, MLflow or a printed line: PostgreSQL reads them from ``PGPASSWORD``
or a password file (``PGPASSFILE``, default ``~/.pgpass``), MLflow from
``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``. URLs are parsed, not pattern-matched:
SQLAlchemy's URL parser for database URLs (the one Optuna's storage uses), ``urllib`` for the rest.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

MASK = "***"
SECRET_QUERY_KEYS = frozenset({"password", "passwd", "pwd", "token", "secret", "access_key", "secret_key"})
"""Query parameters that carry a secret (libpq accepts ``?password=``; object stores take keys)."""


def _is_http(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def _database_url(url: str) -> URL | None:
    if _is_http(url) or "://" not in url:
        return None
    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        return None


def secret_in(url: str) -> str | None:
    """What part of ``url`` holds a secret (``"password"``, ``"query parameter password"``), or None."""
    parsed = _database_url(url)
    if parsed is not None:
        if parsed.password:
            return "password"
        secret = next((key for key in parsed.query if key.lower() in SECRET_QUERY_KEYS), None)
        return f"query parameter {secret}" if secret else None
    if "://" not in url:
        return None
    split = urlsplit(url)
    if split.password:
        return "password"
    secret = next((key for key, _ in parse_qsl(split.query) if key.lower() in SECRET_QUERY_KEYS), None)
    return f"query parameter {secret}" if secret else None


def redact(url: str) -> str:
    """``url`` with any password and secret query value replaced by ``***`` (else unchanged)."""
    if not url or secret_in(url) is None:
        return url
    parsed = _database_url(url)
    if parsed is not None:
        masked = {k: (MASK if k.lower() in SECRET_QUERY_KEYS else v) for k, v in parsed.query.items()}
        return parsed.set(query=masked).render_as_string(hide_password=True)
    split = urlsplit(url)
    netloc = split.netloc
    if split.password:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}:{MASK}@{host}"
    query = urlencode([(k, MASK if k.lower() in SECRET_QUERY_KEYS else v) for k, v in parse_qsl(split.query)],
                      safe="*")
    return urlunsplit((split.scheme, netloc, split.path, query, split.fragment))


def redact_text(text: str, *urls: str) -> str:
    """``text`` with every occurrence of each of ``urls``, and of each secret they hold, redacted
    (for a library's error message, which may quote either)."""
    for url in urls:
        if url and url != redact(url):
            text = text.replace(url, redact(url))
            for secret in _secrets(url):
                text = text.replace(secret, MASK)
    return text


def _secrets(url: str) -> list[str]:
    """The password and secret query values of ``url``."""
    parsed = _database_url(url)
    if parsed is not None:
        values = [parsed.password, *(v for k, v in parsed.query.items() if k.lower() in SECRET_QUERY_KEYS)]
    else:
        split = urlsplit(url)
        values = [split.password, *(v for k, v in parse_qsl(split.query) if k.lower() in SECRET_QUERY_KEYS)]
    flat = [str(v) for value in values if value for v in (value if isinstance(value, tuple) else (value,))]
    return sorted(flat, key=len, reverse=True)
