"""``redis://``: counters shared by every process, each operation one atomic Lua script,
so one round trip.

A counter ``C`` is four keys sharing a hash tag (the same cluster slot):
``{prefix}:{C}:b`` (hash: bucket -> settled units), ``...:x`` (sorted set of reservations
``"<id>:<units>"`` scored by their expiry), ``...:m`` (hash: ``rt`` = units reserved,
``seeded``, and the alert marks) and ``...:s`` (sorted set of the ids settled in the last
hour, scored by when: a settle is idempotent per id). Lua numbers are doubles: every
amount stays below 2**53, and amounts computed in Lua are formatted with ``%d`` before
Redis sees them.

URL query options (removed before the URL reaches redis-py): ``prefix`` (key prefix,
default ``costledger:guard``) and ``timeout`` (seconds to connect and to wait for an
answer, default 2: an unreachable store must fail fast, not hang the call).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote_plus, urlsplit

from .._redact import explain_unparsable_url
from ._store import (
    SETTLED_KEEP_MS,
    Acquired,
    Admission,
    CounterState,
    GuardStore,
    Marks,
    Settlement,
    display_url,
    parse_timeout,
)

if TYPE_CHECKING:
    from limits.storage import Storage

__all__ = ["RedisStore"]

_SPENT = """
local function spent_in(b, floor)
  local total = 0
  local h = redis.call('HGETALL', b)
  for i = 1, #h, 2 do
    if tonumber(h[i]) >= floor then total = total + tonumber(h[i + 1])
    else redis.call('HDEL', b, h[i]) end
  end
  return total
end
local function expire_at(keys, at)
  if at ~= '' then for i = 1, #keys do redis.call('PEXPIREAT', keys[i], at) end end
end
local function drop_expired(x, m, now)
  local expired = redis.call('ZRANGEBYSCORE', x, '-inf', now)
  if #expired > 0 then
    local sub = 0
    for i = 1, #expired do sub = sub + tonumber(string.match(expired[i], ':(%d+)$')) end
    redis.call('ZREMRANGEBYSCORE', x, '-inf', now)
    redis.call('HINCRBY', m, 'rt', string.format('%d', -sub))
  end
end
"""

# KEYS: b x m  ARGV: now amount limit(-1: none) floor member expires keep_until refuse_mark
_RESERVE = (
    _SPENT
    + """
if redis.call('HEXISTS', KEYS[3], 'seeded') == 0 then return {-1, 0, 0, 0} end
drop_expired(KEYS[2], KEYS[3], ARGV[1])
local rt = tonumber(redis.call('HGET', KEYS[3], 'rt') or '0')
local spent = spent_in(KEYS[1], tonumber(ARGV[4]))
local limit = tonumber(ARGV[3])
if limit >= 0 and spent + rt + tonumber(ARGV[2]) > limit then
  local first = 0
  if ARGV[8] ~= '' then first = redis.call('HSETNX', KEYS[3], ARGV[8], 1) end
  return {0, spent, rt, first}
end
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[5])
redis.call('HINCRBY', KEYS[3], 'rt', ARGV[2])
expire_at(KEYS, ARGV[7])
return {1, spent, rt, 0}
"""
)

# KEYS: b m  ARGV: floor keep_until nbuckets (bucket units)* (label units)*
_SEED = (
    _SPENT
    + """
if redis.call('HSETNX', KEYS[2], 'seeded', 1) == 0 then return 0 end
local n = tonumber(ARGV[3])
local i = 4
for _ = 1, n do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
local spent = spent_in(KEYS[1], tonumber(ARGV[1]))
while i <= #ARGV do
  if spent >= tonumber(ARGV[i + 1]) then redis.call('HSETNX', KEYS[2], ARGV[i], 1) end
  i = i + 2
end
expire_at(KEYS, ARGV[2])
return 1
"""
)

# KEYS: b x m s  ARGV: member('' none) reserved bucket amount floor keep_until now id('' none)
#                       keep_ms (label units)*
# ``s``: the ids settled in the last ``keep_ms`` (sorted set scored by when), so a settle
# replayed after a late answer adds nothing the second time.
_SETTLE = (
    _SPENT
    + """
if ARGV[1] ~= '' and redis.call('ZREM', KEYS[2], ARGV[1]) == 1 and ARGV[2] ~= '0' then
  redis.call('HINCRBY', KEYS[3], 'rt', '-' .. ARGV[2])
end
local seeded = redis.call('HEXISTS', KEYS[3], 'seeded')
if ARGV[8] ~= '' then
  local now = tonumber(ARGV[7])
  local keep = tonumber(ARGV[9])
  if redis.call('ZSCORE', KEYS[4], ARGV[8]) then
    -- settled before (an answer that came too late, then a replay): add nothing
    local spent = 0
    if seeded == 1 then spent = spent_in(KEYS[1], tonumber(ARGV[5])) end
    return {spent, tonumber(redis.call('HGET', KEYS[3], 'rt') or '0'), {}}
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', string.format('%d', now - keep))
  redis.call('ZADD', KEYS[4], ARGV[7], ARGV[8])
  redis.call('PEXPIRE', KEYS[4], ARGV[9])
end
if seeded == 0 then
  -- gone (period over, data lost): the seed that recreates it reads this call from the ledger
  return {0, tonumber(redis.call('HGET', KEYS[3], 'rt') or '0'), {}}
end
if ARGV[4] ~= '0' then redis.call('HINCRBY', KEYS[1], ARGV[3], ARGV[4]) end
local spent = spent_in(KEYS[1], tonumber(ARGV[5]))
local fired = {}
for i = 10, #ARGV, 2 do
  if spent >= tonumber(ARGV[i + 1]) and redis.call('HSETNX', KEYS[3], ARGV[i], 1) == 1 then
    fired[#fired + 1] = ARGV[i]
  end
end
expire_at({KEYS[1], KEYS[2], KEYS[3]}, ARGV[6])
return {spent, tonumber(redis.call('HGET', KEYS[3], 'rt') or '0'), fired}
"""
)

# KEYS: x m  ARGV: member reserved
_RELEASE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 and ARGV[2] ~= '0' then
  redis.call('HINCRBY', KEYS[2], 'rt', '-' .. ARGV[2])
end
return 1
"""

# KEYS: b x m  ARGV: floor now
_READ = (
    _SPENT
    + """
drop_expired(KEYS[2], KEYS[3], ARGV[2])
return {spent_in(KEYS[1], tonumber(ARGV[1])), tonumber(redis.call('HGET', KEYS[3], 'rt') or '0'),
        redis.call('HEXISTS', KEYS[3], 'seeded')}
"""
)

# KEYS: b  ARGV: bucket amount limit floor keep_until width
# width > 0: the bucket width, and the time is read again in the script (TIME: when the
# request is judged), moving the bucket and the window forward by ``shift``.
_ACQUIRE = """
if redis.replicate_commands then redis.replicate_commands() end
local bucket = tonumber(ARGV[1])
local floor = tonumber(ARGV[4])
local keep = tonumber(ARGV[5])
local width = tonumber(ARGV[6])
local shift = 0
if width > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local b = now - now % width
  if b > bucket then shift = b - bucket end
end
bucket = bucket + shift
floor = floor + shift
keep = keep + shift
local used = 0
local live = {}
local h = redis.call('HGETALL', KEYS[1])
for i = 1, #h, 2 do
  local k = tonumber(h[i])
  if k >= floor then
    used = used + tonumber(h[i + 1])
    live[#live + 1] = {k, tonumber(h[i + 1])}
  else redis.call('HDEL', KEYS[1], h[i]) end
end
local need = used + tonumber(ARGV[2]) - tonumber(ARGV[3])
if need > 0 then
  table.sort(live, function(a, c) return a[1] < c[1] end)
  local dropped = 0
  for i = 1, #live do
    dropped = dropped + live[i][2]
    if dropped >= need then
      return {0, used, string.format('%d', live[i][1]), string.format('%d', shift)}
    end
  end
  return {0, used, '', string.format('%d', shift)}
end
redis.call('HINCRBY', KEYS[1], string.format('%d', bucket), ARGV[2])
redis.call('PEXPIREAT', KEYS[1], string.format('%d', keep))
return {1, used, '', string.format('%d', shift)}
"""

# KEYS: b  ARGV: bucket delta floor keep_until
_ADJUST = """
if tonumber(ARGV[1]) < tonumber(ARGV[3]) or redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return 0
end
if tonumber(redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])) < 0 then
  redis.call('HSET', KEYS[1], ARGV[1], 0)
end
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
return 1
"""

_GLOB_SPECIAL = str.maketrans({c: "\\" + c for c in "*?[]\\"})


_OPTIONS = frozenset({"prefix", "timeout"})


def _without_options(url: str, query: str) -> str:
    """``url`` without our query options, the rest of its text as given. By hand, not
    urlunsplit: that turns ``unix:///tmp/redis.sock`` (an empty host) into
    ``unix:/tmp/redis.sock``, which redis-py rejects."""
    if not query:
        return url
    head, _, tail = url.partition("?")
    _, hash_mark, fragment = tail.partition("#")
    kept = [
        field
        for field in query.split("&")
        if field and unquote_plus(field.partition("=")[0]) not in _OPTIONS
    ]
    rest = "&".join(kept)
    return f"{head}{'?' if rest else ''}{rest}{hash_mark}{fragment}"


_SCHEMES = {"valkey": "redis", "valkeys": "rediss", "redis+unix": "unix"}
"""Schemes open_store takes for a Redis-protocol server that redis-py's ``from_url`` does
not: Valkey (the same protocol) and limits' spelling of a Unix socket."""


def _redis_py_scheme(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    known = _SCHEMES.get(scheme.lower())
    return f"{known}{sep}{rest}" if sep and known else url


def _redis_py_url(url: str) -> str:
    """The URL redis-py is given: without our options, in a scheme it knows."""
    return _redis_py_scheme(_without_options(url, urlsplit(url).query))


_ENCODE_HINT = (
    "a character in the password (such as / ? # @ :) must be percent-encoded"
    " (/ as %2F, ? as %3F, # as %23, @ as %40, : as %3A)"
)


def _bad_url(url: str, detail: str) -> ValueError:
    """The error for a URL redis-py cannot read: shown with its password masked, and the
    reason redis-py gives for the masked URL (or the hint to percent-encode the password)."""
    import redis

    def parse(text: str) -> object:
        # redis-py's reading, as Redis.from_url does it; no connection is made
        return redis.ConnectionPool.from_url(_redis_py_url(text))

    shown, why = explain_unparsable_url(url, detail, parse, hint=_ENCODE_HINT)
    return ValueError(f"guard_store {shown!r} is not a valid URL: {why}")


def _at(ms: int | None) -> str:
    return "" if ms is None else str(ms)


class RedisStore(GuardStore):
    kind = "redis"

    def __init__(self, url: str, *, client: Any = None) -> None:
        try:
            import redis
        except ModuleNotFoundError as exc:
            from .._errors import missing_extra

            raise missing_extra(exc, f"guard store {display_url(url)}", "redis") from None

        parts = urlsplit(url)
        if "@" not in parts.netloc and "@" in parts.path + parts.fragment:
            # redis-py would connect elsewhere, or fail quoting the password's head as port
            raise _bad_url(url, "an '@' after the host")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        self.prefix = query.pop("prefix", "costledger:guard")
        self.url = display_url(url)
        timeout = parse_timeout(query.pop("timeout", None), url=self.url, default=2.0)
        self._url = _redis_py_url(url)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._answers: type[BaseException] = redis.ResponseError
        try:
            self.client: redis.Redis = client or redis.Redis.from_url(
                self._url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
        except ValueError as exc:
            # Its message may quote a piece of the password: "Port could not be cast to
            # integer value as '<the password up to its first />'".
            raise _bad_url(url, str(exc)) from None
        register = self.client.register_script
        self._reserve = register(_RESERVE)
        self._seed = register(_SEED)
        self._settle = register(_SETTLE)
        self._release = register(_RELEASE)
        self._read = register(_READ)
        self._acquire = register(_ACQUIRE)
        self._adjust = register(_ADJUST)
        self._limits: Storage | None = None
        self._lock = threading.Lock()

    def _keys(self, counter: str) -> list[str]:
        base = f"{self.prefix}:{{{counter}}}"
        return [base + ":b", base + ":x", base + ":m"]

    def _outage(self, cause: BaseException) -> bool:
        """A timeout, or no connection. Not an error Redis answered (a script error, OOM,
        READONLY), nor a connection it closed (a restart): the next operation connects
        again at once, so a restart costs one operation, not a cool-down."""
        if isinstance(cause, self._answers) or not isinstance(cause, self._errors):
            return False
        return "closed by server" not in str(cause)

    def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        def run() -> Any:
            try:
                return script(keys=keys, args=args)
            except self._errors as exc:
                raise self._breaker_failed(exc) from exc

        return self._guarded(run)

    def reserve(
        self,
        counter: str,
        *,
        res_id: str,
        amount: int,
        limit: int | None,
        floor: int,
        now_ms: int,
        expires_ms: int,
        keep_until: int | None,
        refuse_mark: str | None,
    ) -> Admission:
        r = self._run(
            self._reserve,
            self._keys(counter),
            [
                now_ms,
                amount,
                -1 if limit is None else limit,
                floor,
                f"{res_id}:{amount}",
                expires_ms,
                _at(keep_until),
                refuse_mark or "",
            ],
        )
        code = int(r[0])
        if code < 0:
            return Admission("unseeded")
        return Admission("ok" if code else "refused", int(r[1]), int(r[2]), bool(int(r[3])))

    def seed(
        self,
        counter: str,
        *,
        buckets: Mapping[int, int],
        marks: Marks,
        floor: int,
        keep_until: int | None,
    ) -> bool:
        b, _, m = self._keys(counter)
        args: list[Any] = [floor, _at(keep_until), len(buckets)]
        for bucket, units in buckets.items():
            args += [bucket, units]
        for label, units in marks:
            args += [label, units]
        return bool(self._run(self._seed, [b, m], args))

    def settle(
        self,
        counter: str,
        *,
        res_id: str | None,
        reserved: int,
        bucket: int,
        amount: int,
        floor: int,
        keep_until: int | None,
        marks: Marks,
    ) -> Settlement:
        args: list[Any] = [
            "" if res_id is None else f"{res_id}:{reserved}",
            reserved,
            bucket,
            amount,
            floor,
            _at(keep_until),
            int(time.time() * 1000),
            res_id or "",
            SETTLED_KEEP_MS,
        ]
        for label, units in marks:
            args += [label, units]
        keys = self._keys(counter)
        r = self._run(self._settle, [*keys, keys[0][:-2] + ":s"], args)
        fired = tuple(f.decode() if isinstance(f, bytes) else str(f) for f in r[2])
        return Settlement(int(r[0]), int(r[1]), fired)

    def release(self, counter: str, *, res_id: str, reserved: int) -> None:
        _, x, m = self._keys(counter)
        self._run(self._release, [x, m], [f"{res_id}:{reserved}", reserved])

    def read(self, counter: str, *, floor: int, now_ms: int) -> CounterState:
        r = self._run(self._read, self._keys(counter), [floor, now_ms])
        return CounterState(int(r[0]), int(r[1]), bool(int(r[2])))

    def counters(self, prefix: str) -> list[str]:
        head = f"{self.prefix}:{{"
        pattern = head.translate(_GLOB_SPECIAL) + prefix.translate(_GLOB_SPECIAL) + "*}:m"

        def scan() -> list[str]:
            try:
                names = []
                for key in self.client.scan_iter(match=pattern, count=1000):
                    text = key.decode() if isinstance(key, bytes) else str(key)
                    names.append(text[len(head) : -3])
                return names
            except self._errors as exc:
                raise self._breaker_failed(exc) from exc

        return self._guarded(scan)

    def acquire(
        self,
        counter: str,
        *,
        bucket: int,
        amount: int,
        limit: int,
        floor: int,
        keep_until: int,
        width: int = 0,
    ) -> Acquired:
        b = self._keys(counter)[0]
        r = self._run(self._acquire, [b], [bucket, amount, limit, floor, keep_until, width])
        retry = r[2].decode() if isinstance(r[2], bytes) else r[2]
        return Acquired(bool(int(r[0])), int(r[1]), int(retry) if retry else None, int(r[3]))

    def adjust(self, counter: str, *, bucket: int, delta: int, floor: int, keep_until: int) -> None:
        b = self._keys(counter)[0]
        self._run(self._adjust, [b], [bucket, delta, floor, keep_until])

    def limits_storage(self) -> Storage:
        with self._lock:
            if self._limits is None:
                from limits.storage import RedisStorage

                self._limits = RedisStorage(
                    self._url,
                    connection_pool=self.client.connection_pool,
                    key_prefix=f"{self.prefix}:rl",
                )
            return self._limits

    def close(self) -> None:
        self.client.close()
