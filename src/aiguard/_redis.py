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
import os
import threading
import time
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

from aiguard import _store
from aiguard._redis_scripts import SCRIPTS

# Settles and corrections wait this long for a call's round trip to carry them; then the
# writer thread sends them itself.
CARRY_SECONDS = 0.05


class RedisStore(_store.Store):
    """A Redis server (or a Cluster's node for each hash tag) as the shared store."""

    def __init__(self, client: redis.Redis, label: str, url: str | None) -> None:
        super().__init__()
        self.client = client
        self.label = label
        self.url = url
        self.keepalive: Any = None
        self._scripts = {name: client.register_script(src) for name, src in SCRIPTS.items()}
        self._pending: collections.deque[tuple[list[str], list[Any]]] = collections.deque(
            maxlen=100_000
        )
        self._pending_lock = threading.Lock()
        # Settles and corrections, sent off the call path by one daemon thread.
        self._queue: list[tuple[str, list[str], list[Any]]] = []
        self._ready = threading.Condition()
        self._flushing = threading.RLock()  # a flush's success may flush what waited
        self._writer: threading.Thread | None = None
        atexit.register(self.flush)
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        """In a forked child (a pre-forking server's worker): no writer thread yet, fresh
        locks; the parent's queue stays the parent's."""
        self._queue = []
        self._ready = threading.Condition()
        self._flushing = threading.RLock()  # a flush's success may flush what waited
        self._pending_lock = threading.Lock()
        self._writer = None

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

    def read(self, name: str, window: str) -> tuple[int, int]:
        """(spent, reserved) in nano-USD; expired leases are dropped first."""
        keys = self._budget_keys(name, window)
        _, spent, reserved = self.run("budget.read", self._scripts["reserve"], keys, [0, 0, "", 0])
        return int(spent), int(reserved)

    def plan_reserve(
        self, name: str, window: str, amount: int, limit: int, lease: str, lease_ms: int
    ) -> _store.Op:
        return "reserve", self._budget_keys(name, window), [amount, limit, lease, lease_ms]

    def reserve(
        self, name: str, window: str, amount: int, limit: int, lease: str, lease_ms: int
    ) -> tuple[bool, int, int, str]:
        """Hold ``amount`` nano-USD under a lease if it fits: (held, spent, reserved, the
        lease's id: ``lease``, or the one of a reservation made ahead)."""
        _, keys, args = self.plan_reserve(name, window, amount, limit, lease, lease_ms)
        used, (ok, spent, reserved) = self._call("budget.reserve", "reserve", keys, args, 2)
        return bool(ok), int(spent), int(reserved), str(used[2])

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
            if len(self._queue) == 1:
                self._ready.notify()

    def _write(self) -> None:
        """Send what the calls did not carry within :data:`CARRY_SECONDS` (a quiet process)."""
        while True:
            with self._ready:
                while not self._queue:
                    self._ready.wait()
            time.sleep(CARRY_SECONDS)
            self.flush()

    def flush(self) -> None:
        """Send the settles and corrections waiting in the queue, and the settles kept while
        the store was down, in one pipelined round trip (a read that must see them calls it
        first)."""
        with self._flushing:
            with self._ready:
                batch, self._queue = self._queue, []
            with self._pending_lock:
                kept, self._pending = list(self._pending), collections.deque(maxlen=100_000)
            batch = [("settle", keys, args) for keys, args in kept] + batch
            if not batch:
                return
            try:
                self.run("store.flush", self._send, batch)
            except _store.StoreDown:
                with self._pending_lock:
                    self._pending.extend((k, a) for script, k, a in batch if script == "settle")

    def _send(self, batch: list[tuple[str, list[str], list[Any]]]) -> None:
        self.pipelined(batch)

    def recovered(self) -> None:
        self.flush()

    def forget_hold(self, name: str, window: str, lease: str) -> None:
        """A reservation whose answer never came may still land: release it when the store
        answers again (a settle of nothing, sent once)."""
        with self._pending_lock:
            self._pending.append((self._budget_keys(name, window, lease), [lease, 0, 0]))

    def abandon(self, ops: list[_store.Op]) -> None:
        """Operations sent ahead whose answer never came: take back the holds among them
        (counts and probes expire by themselves within a minute)."""
        for script, keys, args in ops:
            if script == "reserve":
                tag = keys[1].rsplit(":", 1)[0]
                with self._pending_lock:
                    self._pending.append(([*keys, f"{tag}:done:{args[2]}"], [args[2], 0, 0]))

    # -- circuits ------------------------------------------------------------------------------

    def plan_acquire(self, name: str, target: str, reset_ms: int, probe_ms: int) -> _store.Op:
        return "acquire", [f"aiguard:{{c:{name}|{target}}}"], [reset_ms, probe_ms]

    def acquire(self, name: str, target: str, reset_ms: int, probe_ms: int) -> list[int]:
        """(allowed, ms until a probe, transition, failures) of a shared circuit."""
        _, keys, args = self.plan_acquire(name, target, reset_ms, probe_ms)
        _, out = self._call("breaker.acquire", "acquire", keys, args)
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

    def plan_rate(
        self, name: str, target: str, rpm: int, tpm: int, tokens: int, entry: str
    ) -> _store.Op:
        return "rate", self._rate_keys(name, target), [rpm, tpm, tokens, entry]

    def rate_acquire(
        self, name: str, target: str, rpm: int, tpm: int, tokens: int, entry: str
    ) -> tuple[float, str]:
        """Count a request on a shared limit: (0, or the seconds until room; the request's id:
        ``entry``, or the one of a count made ahead)."""
        _, keys, args = self.plan_rate(name, target, rpm, tpm, tokens, entry)
        used, wait = self._call("rate.acquire", "rate", keys, args, 3)
        return int(wait) / 1000, str(used[3])

    # -- ahead of the call: one round trip for its circuit, rate limit and budgets ------------

    def carried(self, ops: list[_store.Op]) -> list[Any]:
        """The operations' answers, sent in one round trip with whatever waits in the queue
        ahead of them (settles and corrections ride along a call's own round trip)."""
        with self._ready:
            queued, self._queue = self._queue, []
        try:
            answers = self.pipelined([*queued, *ops])
        except Exception:
            with self._pending_lock:
                self._pending.extend((k, a) for script, k, a in queued if script == "settle")
            raise
        return answers[len(queued) :]

    def pipelined(self, ops: list[_store.Op]) -> list[Any]:
        """The operations' answers, sent in one pipeline: one round trip (redis-py's own
        scripts in a pipeline would ask SCRIPT EXISTS first, a second one). Scripts a restarted
        server lost are loaded again and only the operations that found none are sent again."""
        answers = self._evalsha(ops)
        missing = [i for i, a in enumerate(answers) if isinstance(a, NoScriptError)]
        if missing:
            for script in self._scripts.values():
                self.client.script_load(script.script)
            for i, answer in zip(missing, self._evalsha([ops[i] for i in missing]), strict=True):
                answers[i] = answer
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer
        return answers

    def _evalsha(self, ops: list[_store.Op]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for script, keys, args in ops:
            pipe.evalsha(self._scripts[script].sha, len(keys), *keys, *args)
        answers: list[Any] = pipe.execute(raise_on_error=False)
        return answers

    def _call(
        self, operation: str, script: str, keys: list[str], args: list[Any], id_at: int = -1
    ) -> tuple[list[Any], Any]:
        """(the arguments used, the answer): made ahead by :func:`aiguard._store.prefetch`
        with the same arguments (but the id at ``id_at``), else asked now."""
        hit = _store.taken(script, keys)
        if hit is not None:
            used, answer = hit
            if all(a == b for i, (a, b) in enumerate(zip(used, args, strict=True)) if i != id_at):
                return used, answer
            self.undo(script, keys, used, answer)
        return args, self.run(operation, self.carried, [(script, keys, args)])[0]

    def undo(self, script: str, keys: list[str], args: list[Any], answer: Any) -> None:
        """Take back an operation made ahead and not used (off the call path)."""
        if script == "reserve" and int(answer[0]):
            tag = keys[1].rsplit(":", 1)[0]
            self._later("settle", [*keys, f"{tag}:done:{args[2]}"], [args[2], 0, 0])
        elif script == "rate" and int(answer) == 0:
            self._later("forget", keys[:2], [args[3]])
        elif script == "acquire" and int(answer[0]) and (int(answer[2]) or int(answer[3])):
            self._later("release", keys, [])

    def rate_correct(self, name: str, target: str, entry: str, tokens: int) -> None:
        """Count a request's real tokens instead of its estimate (off the call path)."""
        if self.down:
            raise _store.StoreDown(self.label)
        self._later("correct", self._rate_keys(name, target), [entry, tokens])

    def rate_forget(self, name: str, target: str, entry: str) -> None:
        """Uncount a request that was never sent (off the call path)."""
        self._later("forget", self._rate_keys(name, target)[:2], [entry])

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
