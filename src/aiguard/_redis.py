"""The Redis store: shared budgets, circuits and rate limits, one Lua script per operation.

Imported only when a store is a ``redis://`` URL or a redis client. Each operation is one
script, run atomically by the server on the server's clock (``TIME``), so processes on hosts
with skewed clocks still agree on leases, circuits and windows.

Key layout (Redis Cluster compatible: all the keys one script touches share one hash tag, so
they live in one slot)::

    aiguard:{b:<budget>}:spent:<window>   integer, nano-USD charged in the window (UTC hour,
                                          day, month, or "all"); expires a day after it ends
    aiguard:{b:<budget>}:leases           sorted set, reservation id -> lease end (ms)
    aiguard:{b:<budget>}:held             hash, reservation id -> nano-USD; "_total"
    aiguard:{b:<budget>}:done:<id>        a settled reservation (one hour): a retried settle
                                          never charges twice
    aiguard:{c:<breaker>|<target>}        hash: state, failures, opened, probe (one day)
    aiguard:{r:<limit>|<target>}:log      sorted set, request id -> sent at (ms), last minute
    aiguard:{r:<limit>|<target>}:tokens   hash, request id -> tokens; "_total"
    aiguard:{r:<limit>|<target>}:learned  hash: what the provider's rate-limit headers said

``<target>`` is the endpoint's host, port and model (``api.openai.com:443/gpt-4o``): the same
in every process.
"""

from __future__ import annotations

import atexit
import collections
import threading
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from aiguard import _store

_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, id in ipairs(expired) do
  local held = tonumber(redis.call('HGET', KEYS[3], id) or '0')
  redis.call('HINCRBY', KEYS[3], '_total', -held)
  redis.call('HDEL', KEYS[3], id)
end
if #expired > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now) end
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local reserved = tonumber(redis.call('HGET', KEYS[3], '_total') or '0')
local amount = tonumber(ARGV[1])
if amount > 0 then
  if spent + reserved + amount > tonumber(ARGV[2]) then return {0, spent, reserved} end
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[3])
  redis.call('HSET', KEYS[3], ARGV[3], amount)
  redis.call('HINCRBY', KEYS[3], '_total', amount)
  reserved = reserved + amount
end
return {1, spent, reserved}
"""

_SETTLE = """
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
local held = redis.call('HGET', KEYS[3], ARGV[1])
if held then
  redis.call('HINCRBY', KEYS[3], '_total', -tonumber(held))
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
local cost = tonumber(ARGV[2])
if cost > 0 then
  redis.call('INCRBY', KEYS[1], cost)
  if tonumber(ARGV[3]) > 0 then redis.call('EXPIREAT', KEYS[1], ARGV[3]) end
end
redis.call('SET', KEYS[4], 1, 'EX', 3600)
return 1
"""

# Circuit states: 0 closed, 1 open, 2 half-open. Transitions returned: 0 none, 1 open,
# 2 half-open, 3 closed.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local h = redis.call('HMGET', KEYS[1], 'state', 'failures', 'opened', 'probe')
local state = tonumber(h[1] or '0')
local failures = tonumber(h[2] or '0')
if state == 0 then return {1, 0, 0, failures} end
local left = tonumber(h[3] or '0') + tonumber(ARGV[1]) - now
if state == 1 and left <= 0 then
  redis.call('HSET', KEYS[1], 'state', 2, 'probe', now + tonumber(ARGV[2]))
  return {1, 0, 2, failures}
end
if state == 2 and tonumber(h[4] or '0') < now then
  redis.call('HSET', KEYS[1], 'probe', now + tonumber(ARGV[2]))
  return {1, 0, 0, failures}
end
if left < 0 then left = 0 end
return {0, left, 0, failures}
"""

_RECORD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local h = redis.call('HMGET', KEYS[1], 'state', 'failures')
local state = tonumber(h[1] or '0')
local failures = tonumber(h[2] or '0')
local out = 0
if ARGV[1] == '1' then
  if state == 0 and failures == 0 then return 0 end
  redis.call('HSET', KEYS[1], 'state', 0, 'failures', 0, 'probe', 0)
  if state ~= 0 then out = 3 end
else
  failures = failures + 1
  if state == 2 or (state == 0 and failures >= tonumber(ARGV[2])) then
    redis.call('HSET', KEYS[1], 'state', 1, 'failures', failures, 'opened', now, 'probe', 0)
    out = 1
  else
    redis.call('HSET', KEYS[1], 'failures', failures, 'probe', 0)
  end
end
redis.call('PEXPIRE', KEYS[1], 86400000)
return out
"""

_RELEASE = "redis.call('HSET', KEYS[1], 'probe', 0) return 1"

# Rate limits: KEYS log, tokens, learned. Returns 0 (counted) or the ms until room.
_RATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
for _, id in ipairs(old) do
  local n = tonumber(redis.call('HGET', KEYS[2], id) or '0')
  redis.call('HINCRBY', KEYS[2], '_total', -n)
  redis.call('HDEL', KEYS[2], id)
end
if #old > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000) end
local rpm, tpm, tokens = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local wait = 0
local count = redis.call('ZCARD', KEYS[1])
if rpm > 0 and count + 1 > rpm then
  local e = redis.call('ZRANGE', KEYS[1], count - rpm, count - rpm, 'WITHSCORES')
  wait = tonumber(e[2]) + 60000 - now
end
if tpm > 0 then
  local need = tonumber(redis.call('HGET', KEYS[2], '_total') or '0') + math.min(tokens, tpm) - tpm
  if need > 0 then
    local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
    local freed = 0
    for i = 1, #all, 2 do
      freed = freed + tonumber(redis.call('HGET', KEYS[2], all[i]) or '0')
      if freed >= need then
        wait = math.max(wait, tonumber(all[i + 1]) + 60000 - now)
        break
      end
    end
  end
end
local l = redis.call('HMGET', KEYS[3], 'rr', 'ru', 'tr', 'tu')
local rr, ru = tonumber(l[1] or '0'), tonumber(l[2] or '0')
local tr, tu = tonumber(l[3] or '0'), tonumber(l[4] or '0')
if ru > now and rr < 1 then wait = math.max(wait, ru - now) end
if tu > now and tr < tokens then wait = math.max(wait, tu - now) end
if wait > 0 then return math.max(wait, 1) end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('HSET', KEYS[2], ARGV[4], tokens)
redis.call('HINCRBY', KEYS[2], '_total', tokens)
if ru > now then redis.call('HINCRBY', KEYS[3], 'rr', -1) end
if tu > now then redis.call('HINCRBY', KEYS[3], 'tr', -tokens) end
redis.call('PEXPIRE', KEYS[1], 61000)
redis.call('PEXPIRE', KEYS[2], 61000)
return 0
"""

_CORRECT = """
local old = redis.call('HGET', KEYS[2], ARGV[1])
if not old then return 0 end
local delta = tonumber(ARGV[2]) - tonumber(old)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[2], '_total', delta)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tonumber(redis.call('HGET', KEYS[3], 'tu') or '0') > now then
  redis.call('HINCRBY', KEYS[3], 'tr', -delta)
end
return 1
"""

# ARGV: requests remaining, ms to reset, tokens remaining, ms to reset (-1: not said).
_LEARN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tonumber(ARGV[1]) >= 0 then
  redis.call('HSET', KEYS[1], 'rr', ARGV[1], 'ru', now + tonumber(ARGV[2]))
end
if tonumber(ARGV[3]) >= 0 then
  redis.call('HSET', KEYS[1], 'tr', ARGV[3], 'tu', now + tonumber(ARGV[4]))
end
redis.call('PEXPIRE', KEYS[1], 61000)
return 1
"""


class RedisStore(_store.Store):
    """A Redis server (or a Cluster's node for each hash tag) as the shared store."""

    def __init__(self, client: redis.Redis, label: str, url: str | None) -> None:
        super().__init__()
        self.client = client
        self.label = label
        self.url = url
        self.keepalive: Any = None
        self._scripts = {
            name: client.register_script(source)
            for name, source in (
                ("reserve", _RESERVE),
                ("settle", _SETTLE),
                ("acquire", _ACQUIRE),
                ("record", _RECORD),
                ("release", _RELEASE),
                ("rate", _RATE),
                ("correct", _CORRECT),
                ("learn", _LEARN),
            )
        }
        self._pending: collections.deque[tuple[list[str], list[Any]]] = collections.deque(
            maxlen=100_000
        )
        self._pending_lock = threading.Lock()
        # Settles and corrections, sent off the call path by one daemon thread.
        self._queue: list[tuple[str, list[str], list[Any]]] = []
        self._ready = threading.Condition()
        self._flushing = threading.Lock()
        self._writer: threading.Thread | None = None
        atexit.register(self.flush)

    @classmethod
    def make(cls, given: object, what: str) -> RedisStore:
        """A store on its own sync client with bounded timeouts and no retries of its own."""
        bounds: dict[str, Any] = {
            "socket_timeout": _store.TIMEOUT,
            "socket_connect_timeout": _store.TIMEOUT,
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
        }
        if isinstance(given, str):
            client = redis.Redis.from_url(given, **bounds)
            kwargs = client.connection_pool.connection_kwargs
            return cls(client, _where(kwargs), given)
        pool = getattr(given, "connection_pool", None)
        found = getattr(pool, "connection_kwargs", None)
        if not isinstance(found, dict):
            raise TypeError(f"{what} must be a redis.Redis or redis.asyncio.Redis client")
        copied = {key: found[key] for key in _KEPT if key in found}
        kind = getattr(pool, "connection_class", type(None)).__name__
        connection: Any = redis.Connection
        if "SSL" in kind:
            connection = redis.SSLConnection
        elif "Unix" in kind:
            connection = redis.UnixDomainSocketConnection
        sync_pool = redis.ConnectionPool(connection_class=connection, **copied, **bounds)
        return cls(redis.Redis(connection_pool=sync_pool), _where(copied), None)

    # -- budgets ------------------------------------------------------------------------------

    @staticmethod
    def _budget_keys(name: str, window: str, lease: str = "") -> list[str]:
        tag = f"aiguard:{{b:{name}}}"
        keys = [f"{tag}:spent:{window}", f"{tag}:leases", f"{tag}:held"]
        if lease:
            keys.append(f"{tag}:done:{lease}")
        return keys

    def reserve(
        self, name: str, window: str, amount: int, limit: int, lease: str, lease_ms: int
    ) -> tuple[bool, int, int]:
        """Hold ``amount`` nano-USD under ``lease`` if it fits: (held, spent, reserved)."""
        keys = self._budget_keys(name, window)
        args = [amount, limit, lease, lease_ms]
        ok, spent, reserved = self.run("budget.reserve", self._scripts["reserve"], keys, args)
        return bool(ok), int(spent), int(reserved)

    def settle(self, name: str, window: str, expire_at: int, lease: str, cost: int) -> None:
        """Release ``lease`` and charge ``cost`` nano-USD, once, off the call path. Raises
        StoreDown (the settle kept for when the store answers again: a settle sent twice never
        charges twice) while the store is down."""
        keys = self._budget_keys(name, window, lease)
        args = [lease, cost, expire_at]
        if self.down:
            with self._pending_lock:
                self._pending.append((keys, args))
            raise _store.StoreDown(self.label)
        self._later("settle", keys, args)

    def _later(self, script: str, keys: list[str], args: list[Any]) -> None:
        with self._ready:
            self._queue.append((script, keys, args))
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write, name="aiguard-store-writer", daemon=True
                )
                self._writer.start()
            self._ready.notify()

    def _write(self) -> None:
        while True:
            with self._ready:
                while not self._queue:
                    self._ready.wait()
            self.flush()

    def flush(self) -> None:
        """Send the settles and corrections waiting in the queue, in one pipelined round trip
        (a read that must see them calls it first)."""
        with self._flushing:
            with self._ready:
                batch, self._queue = self._queue, []
            if not batch:
                return
            try:
                self.run("store.flush", self._send, batch)
            except _store.StoreDown:
                with self._pending_lock:
                    self._pending.extend((k, a) for script, k, a in batch if script == "settle")

    def _send(self, batch: list[tuple[str, list[str], list[Any]]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for script, keys, args in batch:
            self._scripts[script](keys, args, client=pipe)
        pipe.execute()

    def recovered(self) -> None:
        with self._pending_lock:
            pending, self._pending = list(self._pending), collections.deque(maxlen=100_000)
        if pending:
            try:
                self._send([("settle", keys, args) for keys, args in pending])
            except Exception:  # tried again when the store next recovers
                with self._pending_lock:
                    self._pending.extend(pending)

    # -- circuits ------------------------------------------------------------------------------

    def acquire(self, name: str, target: str, reset_ms: int, probe_ms: int) -> list[int]:
        """(allowed, ms until a probe, transition, failures) of a shared circuit."""
        keys = [f"aiguard:{{c:{name}|{target}}}"]
        out = self.run("breaker.acquire", self._scripts["acquire"], keys, [reset_ms, probe_ms])
        return [int(x) for x in out]

    def record(self, name: str, target: str, ok: bool, threshold: int) -> int:
        keys = [f"aiguard:{{c:{name}|{target}}}"]
        args = ["1" if ok else "0", threshold]
        return int(self.run("breaker.record", self._scripts["record"], keys, args))

    def release(self, name: str, target: str) -> None:
        keys = [f"aiguard:{{c:{name}|{target}}}"]
        self.run("breaker.release", self._scripts["release"], keys, [])

    # -- rate limits ---------------------------------------------------------------------------

    @staticmethod
    def _rate_keys(name: str, target: str) -> list[str]:
        tag = f"aiguard:{{r:{name}|{target}}}"
        return [f"{tag}:log", f"{tag}:tokens", f"{tag}:learned"]

    def rate_acquire(
        self, name: str, target: str, rpm: int, tpm: int, tokens: int, entry: str
    ) -> float:
        """Count a request on a shared limit: 0, or the seconds until room."""
        keys = self._rate_keys(name, target)
        args = [rpm, tpm, tokens, entry]
        return int(self.run("rate.acquire", self._scripts["rate"], keys, args)) / 1000

    def rate_correct(self, name: str, target: str, entry: str, tokens: int) -> None:
        """Count a request's real tokens instead of its estimate (off the call path)."""
        if self.down:
            raise _store.StoreDown(self.label)
        self._later("correct", self._rate_keys(name, target), [entry, tokens])

    def rate_learn(self, name: str, target: str, said: dict[str, tuple[int, float]]) -> None:
        requests, tokens = said.get("requests", (-1, 0.0)), said.get("tokens", (-1, 0.0))
        args = [requests[0], int(requests[1] * 1000), tokens[0], int(tokens[1] * 1000)]
        keys = self._rate_keys(name, target)[2:]
        self.run("rate.learn", self._scripts["learn"], keys, args)

    # -- the doctor ----------------------------------------------------------------------------

    def check(self) -> str:
        info = self.run("ping", self.client.info, "server")
        return f"redis {info.get('redis_version', '?')} at {self.label}"


# What a copied client keeps of its connection settings (not its timeouts or retries).
_KEPT = (
    "host",
    "port",
    "db",
    "username",
    "password",
    "path",
    "client_name",
    "credential_provider",
    "ssl_keyfile",
    "ssl_certfile",
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_ca_path",
    "ssl_ca_data",
    "ssl_check_hostname",
    "ssl_password",
)


def _where(kwargs: dict[str, Any]) -> str:
    """The store's address for logs and errors: never its password."""
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}"
    host, port = kwargs.get("host", "localhost"), kwargs.get("port", 6379)
    return f"redis://{host}:{port}/{kwargs.get('db', 0)}"
