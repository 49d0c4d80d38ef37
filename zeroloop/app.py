"""The composition root: `App(settings)` opens and closes everything, and is passed down.

There are no module-level singletons in zeroloop. Whatever needs the store, the bus or
the queue receives the App (or the one part it needs) through its constructor.
"""

from __future__ import annotations

import logging
from types import TracebackType

from zeroloop.config import Settings
from zeroloop.events.bus import EventBus
from zeroloop.store import migrate
from zeroloop.store.database import Store

log = logging.getLogger(__name__)


class App:
    """Everything one zeroloop process has open, in the order it opens and closes it."""

    def __init__(self, settings: Settings, *, source: str = "zeroloop", upgrade: bool | None = None) -> None:
        """Open the store; upgrade an embedded store's schema when settings allow, else require it current.

        `source` names this process in the events it publishes. `upgrade` overrides the
        setting: True always upgrades, False never does.
        """
        self.settings = settings
        self.store = Store(settings.store_url, settings.store)
        try:
            auto = settings.store.auto_upgrade and self.store.backend == "sqlite"
            if upgrade if upgrade is not None else auto:
                before = migrate.upgrade(self.store)
                if not before.up_to_date:
                    log.info("store schema upgraded from %s to %s", before.current, before.head)
            else:
                migrate.require_current(self.store)
        except BaseException:
            self.store.close()
            raise
        self.bus = EventBus(self.store, node=settings.cluster.node_id, source=source)

    def close(self) -> None:
        """Close everything this App opened, in reverse order."""
        self.store.close()

    def __enter__(self) -> App:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
