"""Scrub secrets (API keys, bearer tokens, passwords) from values before they are logged or stored.

Two rules, applied recursively to strings, bytes, mappings, sequences and sets:

* a mapping entry whose KEY names a secret (``Authorization``, ``api_key``,
  ``x-api-key``, ``password``, ``secret``, ``token``, ``access_token``, ...) has its
  value replaced by ``"[REDACTED]"`` whatever the value is (``None`` stays ``None``:
  it carries nothing);
* inside every string, known key shapes (``sk-...``, ``sk-ant-...``, ``AIza...``,
  ``AKIA...``, ``Bearer ...``, ``password=...``, a long key-like value after
  ``...key=``, the password of a ``scheme://user:password@host`` URL) are replaced by
  ``"[REDACTED]"`` and the rest of the text is kept.

Most strings hold no secret, so a single precompiled regex of candidate
substrings is tried first and a string without any is returned as is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import unquote_plus, urlsplit

__all__ = [
    "PERCENT_ENCODE_HINT",
    "REDACTED",
    "explain_unparsable_url",
    "is_secret_key",
    "mask_userinfo",
    "redact",
    "redact_processor",
    "redact_text",
    "redact_url",
]

REDACTED = "[REDACTED]"

# Deeper structures than this are replaced whole: a cycle or an absurd nesting
# must not turn a log call into a RecursionError.
_MAX_DEPTH = 32
_TOO_DEEP = "[REDACTED: nested too deeply]"

# Cheap first test, on the lowercased text: every secret pattern below contains one of
# these, so a text without any is clean. False hits only cost the full pass. (A URL's
# password has a test of its own: "://" in the text.)
_CANDIDATE = re.compile(
    r"sk-|aiza|akia|asia|bearer|key|token|secret|passw|auth|credential|cookie|"
    r"hf_|gsk_|xai-|gh[pousr]_|github_pat_|-----begin"
)

# Names that mark a secret, as the last word of a key or of a ``name=`` in text:
# "api_key", "openai_api_key", "x-api-key", "password", "client_secret", "access_token".
# "max_tokens" and "input_tokens" do not match: "tokens" is not "token".
_SECRET_KEY = re.compile(
    r"(?:^|_)(?:api_?key|apikey|access_?key|secret_?key|private_?key|password|passwd|"
    r"secret|token|credentials?|authorization|auth|cookie)$"
)

# First pass: shapes that are secrets wherever they appear. Case-sensitive with the few
# case-insensitive words spelled out: IGNORECASE makes CPython's re several times slower.
_SHAPES = re.compile(
    "|".join(
        (
            # "Authorization: Bearer x", "authorization=Basic x": keep the name, drop the rest
            # (a "Basic" value is only base64 of user:password).
            r"(?P<auth>\b(?:[Pp]roxy-)?(?:[Aa]uthorization|AUTHORIZATION))"
            r"(?P<sep>[\"']?\s*[:=]\s*[\"']?)"
            r"(?:(?:[Bb]asic|[Bb]earer|BEARER|[Tt]oken|[Dd]igest|[Aa]pi[Kk]ey)\s+)?[^\s\"',;&]+",
            # "Bearer xyz" anywhere else (curl lines, exception messages)
            r"(?P<bearer>\b(?:[Bb]earer|BEARER))\s+[A-Za-z0-9\-._~+/]+=*",
            r"\bsk-[A-Za-z0-9_\-]{16,}",  # OpenAI sk-, sk-proj-, sk-svcacct-; Anthropic sk-ant-
            r"\bAIza[0-9A-Za-z_\-]{35}",  # Google API keys
            r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",  # AWS access key ids
            r"\b(?:hf_|gsk_|xai-)[A-Za-z0-9]{30,}",  # Hugging Face, Groq, xAI
            r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})",  # GitHub
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)",
        )
    )
)

# Second pass: "name=value" / "name: value" pairs. The name decides (see _replace_pair).
# The value is only looked at, not consumed, so a pair inside another pair's value
# ("url=https://h/?api_key=...") is still found.
_PAIRS = re.compile(
    r"(?<![A-Za-z0-9_\-.])(?P<name>[A-Za-z0-9_\-.]*[A-Za-z0-9])"
    r"[\"']?[ \t]*[:=][ \t]*[\"']?(?=(?P<value>[^\s\"',;&]+))"
)

# "scheme://user:password@host" in text, user and host kept. The password runs to the last
# "@" before the path (an unencoded "@" in it is still the password's); with no "@" there,
# it held an unencoded "/", "?" or "#", and runs to the URL's last "@", unless that "user:"
# was a host and a port before a path ("https://registry:443/@scope/pkg"). Bounded: a long
# run of "://a:" without an "@" must not cost quadratic time. The literal "://" first lets
# re skip to the candidates.
_URL_PASSWORD = re.compile(
    r"(?P<user>://[^\s:/?#@\"'<>]*:)"
    r"(?:[^\s\"'<>/?#]{1,512}@|(?!\d*(?:[/?#\s\"'<>]|$))[^\s\"'<>]{1,512}@)"
)

_KEY_LIKE = re.compile(r"[A-Za-z0-9_\-+/=.]{20,}")
_HAS_DIGIT = re.compile(r"\d")
_HAS_LETTER = re.compile(r"[A-Za-z]")


def _replace_shape(match: re.Match[str]) -> str:
    name = match.group("auth")
    if name is not None:
        return f"{name}{match.group('sep')}{REDACTED}"
    name = match.group("bearer")
    if name is not None:
        return f"{name} {REDACTED}"
    return REDACTED


def _replace_url_password(match: re.Match[str]) -> str:
    return f"{match.group('user')}{REDACTED}@"


def _is_secret_pair(name: str, value: str) -> bool:
    if value.startswith(REDACTED):
        return False
    if _key_info(name)[0]:
        return True
    # Any other "...key=": only a long value that mixes letters and digits, as keys do.
    return (
        name[-3:].lower() == "key"
        and _KEY_LIKE.fullmatch(value) is not None
        and _HAS_DIGIT.search(value) is not None
        and _HAS_LETTER.search(value) is not None
    )


def _redact_pairs(text: str) -> str:
    parts: list[str] = []
    done = 0  # text[:done] is already in parts
    for match in _PAIRS.finditer(text):
        start = match.start("value")
        if start < done:
            continue  # inside a value already replaced
        value = match.group("value")
        if _is_secret_pair(match.group("name"), value):
            parts.append(text[done:start])
            parts.append(REDACTED)
            done = start + len(value)
    if not parts:
        return text
    parts.append(text[done:])
    return "".join(parts)


# Strings already found clean (model names, user ids, tags repeat on every event).
# Only clean strings are kept, so the cache never holds a secret; it is emptied
# when full rather than kept as an LRU, which would cost more than it saves.
_clean_texts: set[str] = set()
_CLEAN_CACHE_SIZE = 16_384
_CLEAN_CACHE_MAX_LEN = 256


def redact_text(text: object) -> str:
    """``text`` with every secret-shaped substring replaced by ``"[REDACTED]"``.

    A value that is not a string (a numeric id, a UUID) is scrubbed as its ``str()``."""
    if not isinstance(text, str):
        text = str(text)
    if text in _clean_texts:
        return text
    result = text
    # The cheap tests first; lower() costs far less than a case-insensitive regex.
    if "://" in text:
        result = _URL_PASSWORD.sub(_replace_url_password, result)
    if _CANDIDATE.search(text.lower()) is not None:
        result = _SHAPES.sub(_replace_shape, result)
        if "=" in result or ":" in result:
            result = _redact_pairs(result)
    if result == text and len(text) <= _CLEAN_CACHE_MAX_LEN:
        if len(_clean_texts) >= _CLEAN_CACHE_SIZE:
            _clean_texts.clear()
        _clean_texts.add(text)
    return result


def _is_secret_name(key: str) -> bool:
    # "openaiApiKey" -> "openai_api_key"; "X-Api-Key" -> "x_api_key";
    # "gen_ai.usage.input_tokens" ends in "tokens", not "token", and stays.
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key).lower()
    words = re.sub(r"[^a-z0-9]+", "_", words).strip("_")
    return _SECRET_KEY.search(words) is not None


# Mapping key -> (names a secret?, the key itself scrubbed). Keys repeat on every
# event, so one dict lookup replaces both tests.
_keys: dict[str, tuple[bool, str | None]] = {}


def _key_info(key: str) -> tuple[bool, str | None]:
    """(names a secret?, the key scrubbed, or None when it holds no secret itself)."""
    info = _keys.get(key)
    if info is None:
        scrubbed = redact_text(key)
        info = (_is_secret_name(key), None if scrubbed == key else scrubbed)
        if len(_keys) >= _CLEAN_CACHE_SIZE:
            _keys.clear()
        _keys[key] = info
    return info


def is_secret_key(key: object) -> bool:
    """Whether a mapping key names a secret (``api_key``, ``Authorization``, ``password``, ...)."""
    return isinstance(key, str) and _key_info(key)[0]


def _redact_mapping(value: Mapping[Any, Any], depth: int) -> Any:
    changed = False
    out: dict[Any, Any] = {}
    keys = _keys
    clean = _clean_texts
    for key, item in value.items():
        if type(key) is str:
            info = keys.get(key) or _key_info(key)
            new_key = key if info[1] is None else info[1]
            if info[0] and item is not None:
                out[new_key] = REDACTED
                changed = True
                continue
        else:
            new_key = key
        kind = type(item)
        # The common leaves inline: this loop runs for every field of every event.
        if kind is str:
            new = item if item in clean else redact_text(item)
        elif item is None or kind is int or kind is bool or kind is float:
            new = item
        else:
            new = _redact(item, depth + 1)
        if new is not item or new_key is not key:
            changed = True
        out[new_key] = new
    # Unchanged input comes back as the same object: no copy on the common path.
    return out if changed else value


def _redact(value: Any, depth: int) -> Any:
    kind = type(value)
    if kind is str:
        return redact_text(value)
    if value is None or kind is int or kind is bool or kind is float:
        return value
    if depth >= _MAX_DEPTH:
        return _TOO_DEEP
    if kind is dict or isinstance(value, Mapping):
        return _redact_mapping(value, depth)
    if kind is list or kind is tuple or isinstance(value, (list, tuple)):
        items = [_redact(item, depth + 1) for item in value]
        if all(new is old for new, old in zip(items, value, strict=True)):
            return value
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, (set, frozenset)):
        items = [_redact(item, depth + 1) for item in value]
        if all(new is old for new, old in zip(items, value, strict=True)):
            return value
        # A list: two secrets scrubbed to the same text stay two items, and a scrubbed
        # item may no longer be hashable. Sorted, so the same set always gives the same list.
        return sorted(items, key=repr)
    if isinstance(value, str):  # str subclasses (StrEnum members and the like)
        return redact_text(value)
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value).decode("utf-8", "replace")
        scrubbed = redact_text(text)
        return value if scrubbed == text else scrubbed
    return value


def redact(value: Any) -> Any:
    """``value`` with secrets replaced by ``"[REDACTED]"``; recursive over mappings and sequences.

    Returns the same object when nothing needed scrubbing. Mappings that changed
    come back as ``dict``, lists as ``list``, tuples as ``tuple``, sets and frozensets
    as a ``list`` (sorted by ``repr``), and bytes holding a secret as the scrubbed text
    (decoded as UTF-8, undecodable bytes replaced). Other objects
    (numbers, dataclasses, ...) are returned unchanged: render them to text
    first if they may hold a secret.
    """
    return _redact(value, 0)


def redact_processor(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor that scrubs secrets from every value of the event dict.

    Put it before the renderer in your own chain::

        structlog.configure(processors=[..., costledger.redact_processor, JSONRenderer()])
    """
    scrubbed: MutableMapping[str, Any] = _redact_mapping(event_dict, 0)
    return scrubbed


SECRET_QUERY_KEYS = frozenset(
    {
        "password",
        "pass",
        "passwd",
        "sslpassword",
        "secret",
        "token",
        "access_token",
        "api_key",
        "api-key",
        "apikey",
        "key",  # Gemini's ?key=
    }
)
"""Query parameters (lower case) whose value is a secret: masked in a URL shown, and
scrubbed from what the HTTP transport stores about a request sending one."""


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``: the one in the userinfo and the
    value of a query parameter that carries a secret (``?password=...``, ``token``, ...;
    the key in any case). Only those pieces change, the rest of the text stays as given.

    A password holding an unencoded ``/``, ``?`` or ``#`` ends the URL's host part early
    (``redis://:Ab/cd@host``): when what is left there cannot be a host and port and an
    ``@`` follows, everything from ``user:`` to the last ``@`` is masked."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable URL>"
    shown = url
    if password is not None:
        # By hand, not urlunsplit: that drops the '//' of a URL whose host is empty.
        user = parts.username or ""
        host = parts.netloc.rsplit("@", 1)[-1]
        shown = shown.replace(f"//{parts.netloc}", f"//{user}:***@{host}", 1)
    elif _cut_password(parts.netloc, url):
        shown = mask_userinfo(url)
        parts = urlsplit(shown)
    if parts.query:
        head, _, tail = shown.partition("?")
        query, hash_mark, fragment = tail.partition("#")
        shown = f"{head}?{_mask_query(query)}{hash_mark}{fragment}"
    return shown


def _cut_password(netloc: str, url: str) -> bool:
    """Whether urlsplit's host part is the head of a password cut by an unencoded ``/``,
    ``?`` or ``#``: a ``user:`` with no valid port after it, and an ``@`` further on."""
    _, colon, port = netloc.rpartition(":")
    if not colon or port.isdigit() or "@" in netloc:
        return False
    return "@" in url.partition("://")[2][len(netloc) :]


# "scheme://user:password@rest" (or, without "://", "[scheme:[/]]user:password@rest"): the
# password runs to the LAST "@" (parsers stop at the first "@" or at a "/", so with an
# unencoded one in it, its tail would show up as host, port or path).
_CREDENTIALS = re.compile(r"(?P<head>[^:/?#@]+://[^:/?#@]*:)(?P<password>.*)@(?P<tail>[^@]*)", re.S)
_CREDENTIALS_NO_SLASHES = re.compile(
    r"(?P<head>(?:[^:/?#@]+:/?)?[^:/@]*:)(?P<password>.*)@(?P<tail>[^@]*)", re.S
)

PERCENT_ENCODE_HINT = "a character in the password (such as @ / : ?) must be percent-encoded"


def mask_userinfo(url: str) -> str:
    """``url`` with everything between ``scheme://user:`` and the last ``@`` as ``***``
    (the password, whatever unencoded characters it holds); as given without one."""
    pattern = _CREDENTIALS if "://" in url else _CREDENTIALS_NO_SLASHES
    match = pattern.fullmatch(url)
    if match is None or not match["password"]:
        return url
    return f"{match['head']}***@{match['tail']}"


def explain_unparsable_url(
    url: str, detail: str, parse: Callable[[str], object], hint: str = PERCENT_ENCODE_HINT
) -> tuple[str, str]:
    """A URL that ``parse`` refused, and why, both fit to show: the URL with its password
    masked (``mask_userinfo``, then ``redact_url``'s query masking). The parser's complaint
    may quote a piece of the password (as a port, say), so the reason given is the one
    ``parse`` gives for the masked URL, or, when that one parses, that the password must
    be percent-encoded (``hint``)."""
    masked = mask_userinfo(url)
    if masked == url:
        return redact_url(url), detail
    shown = redact_url(masked)
    try:
        parse(masked)
    except Exception as exc:
        return shown, str(exc)
    return shown, hint


def _mask_query(query: str) -> str:
    fields = []
    for field in query.split("&"):
        key, equals, _ = field.partition("=")
        if equals and unquote_plus(key).strip().lower() in SECRET_QUERY_KEYS:
            field = f"{key}=***"
        fields.append(field)
    return "&".join(fields)
