"""The exception root of zeroloop.

Every error zeroloop raises on purpose derives from `ZeroloopError`, so a caller can
catch the package's failures without catching programming mistakes. Messages say what
was wrong and what to do about it, in one line, because the CLI prints them as-is.

    ZeroloopError
    ├── ConfigError            a setting has a value it does not accept
    ├── StoreError             the state store cannot be used
    │   ├── StoreURLError      the store URL is malformed or names an unknown backend
    │   ├── StoreUnavailable   the store cannot be reached or opened
    │   │   └── StoreFull      the store's disk is full
    │   ├── StoreCorrupt       the store file is damaged or is not a zeroloop store
    │   └── SchemaError        the database schema is missing, older or newer than the code
    ├── DataDirError           the data directory cannot be created or written
    ├── EventError             an event is unknown or its payload is invalid
    ├── QueueError             a job request is invalid or a job transition is refused
    │   ├── StaleLeaseError    a lease was presented with a fencing token that is no longer current
    │   └── BackpressureRefused  a producer enqueued while its queue is at STOP
    ├── LeaseError             a leader or role lease is not held
    ├── DaemonError            a daemon spec, profile or state change is invalid
    ├── ArtifactError          an artifact is missing, corrupt or its URL is refused
    ├── WorkloadError          a workload operation failed or produced invalid output
    ├── StageError             a pipeline stage change the stage machine does not allow
    ├── RegistryError          a model is unknown or cannot make the requested move
    ├── TuneError              a tune cannot start, go on or be adopted as asked  (zeroloop.tune)
    ├── AlertError             an alert command failed (the bus retries the alert)
    ├── OperationsError        a backup, restore or garbage collection cannot proceed
    ├── AuthError              a server request carries no usable token                  (HTTP 401)
    │   ├── TokenRevoked       the token or credential was revoked: a worker stops       (HTTP 401)
    │   └── Forbidden          the token is valid but may not do this                    (HTTP 403)
    ├── ProviderError          a provider could not launch, stop or list machines  (zeroloop.fleet.providers.base)
    └── HandlerTimeout         an event handler ran past its timeout  (zeroloop.events.consumer, an EventError)
"""

from __future__ import annotations


class ZeroloopError(Exception):
    """Base class of every error zeroloop raises deliberately."""


class ConfigError(ZeroloopError):
    """A setting has a value it does not accept; the message names the setting."""


class StoreError(ZeroloopError):
    """The state store cannot be used."""


class StoreURLError(StoreError):
    """The store URL is malformed or names a backend zeroloop does not support."""


class StoreUnavailable(StoreError):
    """The store cannot be reached, opened or written."""


class StoreFull(StoreUnavailable):
    """The store cannot write because its disk (or quota) is full; it works again once space is freed."""


class StoreCorrupt(StoreError):
    """The store file is damaged, truncated or not a database at all."""


class SchemaError(StoreError):
    """The database schema does not match what this version of zeroloop expects."""


class DataDirError(ZeroloopError):
    """The data directory cannot be created or written."""


class EventError(ZeroloopError):
    """An event type is unknown or an event payload does not match its schema."""


class QueueError(ZeroloopError):
    """A job request is invalid or a job transition is refused."""


class StaleLeaseError(QueueError):
    """A fencing token was presented that is no longer the current one."""


class BackpressureRefused(QueueError):
    """A producer tried to enqueue while its queue is at backpressure level STOP."""


class LeaseError(ZeroloopError):
    """A leader or role lease is not held by the caller."""


class DaemonError(ZeroloopError):
    """A daemon spec or profile is invalid (unknown dependency, cycle) or a state change is illegal."""


class ArtifactError(ZeroloopError):
    """An artifact is missing or corrupt, or its location is refused."""


class WorkloadError(ZeroloopError):
    """A workload operation failed or produced output that does not verify."""


class StageError(ZeroloopError):
    """A pipeline stage change that the stage machine does not allow."""


class RegistryError(ZeroloopError):
    """A model is unknown or cannot make the requested move."""


class TuneError(ZeroloopError):
    """A tune (population-based training of a config key's settings) cannot start, go on or be adopted as asked."""


class AlertError(ZeroloopError):
    """An alert command failed; the bus retries the alert."""


class OperationsError(ZeroloopError):
    """A backup, a restore or a garbage collection cannot proceed; the message says what to do."""


class AuthError(ZeroloopError):
    """A request to `zeroloop serve` carries no token, or one that is unknown, expired or revoked."""


class TokenRevoked(AuthError):
    """The token (or the credential issued under it) was revoked: no retry or restart will mend it.

    A worker that hears this should stop rather than retry (zeroloop.remote.client raises it
    for the server's 401 naming it).
    """


class Forbidden(AuthError):
    """A valid token asked for something its role or node may not do."""
