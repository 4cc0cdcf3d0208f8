"""The engine: one guarded call, whatever the provider, with no I/O but sleeping.

Read it bottom-up:

- ``contract``: what a provider adapter gives the engine (:class:`Route`, :class:`Reader`,
  :class:`Endpoint`), written down;
- ``state``: the process-wide state (the call in progress, the test mode);
- ``ledger``: reserve, charge, release, and the roll-up of costs into the enclosing call;
- ``record``: the call record, everything telemetry of one logical call, ended exactly once;
- ``checking``: input checks before anything is sent;
- ``stream``: the SDK's stream handed to the user, ending the call exactly once;
- ``call``: the guarded call's decisions (retry, fallback, breaker, deadline, re-ask);
- ``driver``: the attempt loop, once, and the sync and async drivers that run it.

Nothing here imports a provider adapter, the client wrapper, the decorator or the policy file.
"""
