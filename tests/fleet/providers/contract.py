"""The contract every provider keeps, as one test class to subclass per provider.

A subclass provides a `provider` fixture (a ready Provider of some pool) and may
override `argv` (what the launched machine runs: a long sleep by default) and
`settle_s` (how long a provider may take to show a change). Each test launches at most
two machines and terminates what it launched, even when it fails.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from zeroloop.fleet.providers.base import LaunchSpec, Machine, MachineState, Provider

LIVE = (MachineState.PENDING, MachineState.RUNNING)


def wait_until(probe: Callable[[], bool], timeout_s: float, interval_s: float = 0.2) -> bool:
    """Poll `probe` until it is true or `timeout_s` seconds passed; return its last answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        if probe():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


class ProviderContract:
    """Launch, list, terminate and offers, as every provider must do them."""

    settle_s = 20.0

    @pytest.fixture
    def provider(self) -> Provider:
        raise NotImplementedError("a provider's contract test defines the `provider` fixture")

    def argv(self) -> tuple[str, ...]:
        """What a launched machine runs in the contract tests: it must keep running until terminated."""
        return (sys.executable, "-c", "import time; time.sleep(600)")

    def spec(self, provider: Provider) -> LaunchSpec:
        node_id = f"contract-{uuid.uuid4().hex[:8]}"
        return LaunchSpec(
            node_id=node_id,
            pool=provider.name,
            profile=provider.pool.profile,
            argv=self.argv(),
            env={"ZEROLOOP_CLUSTER__NODE_ID": node_id},
        )

    @pytest.fixture
    def launched(self, provider: Provider) -> Iterator[list[str]]:
        ids: list[str] = []
        yield ids
        for provider_id in ids:
            provider.terminate(provider_id)

    def live(self, provider: Provider, provider_id: str) -> Machine | None:
        found = [m for m in provider.machines() if m.provider_id == provider_id and m.state in LIVE]
        return found[0] if found else None

    def test_check_passes(self, provider: Provider) -> None:
        provider.check()

    def test_launch_is_listed_with_its_node(self, provider: Provider, launched: list[str]) -> None:
        spec = self.spec(provider)
        result = provider.launch(spec)
        launched.append(result.provider_id)
        assert result.provider_id
        assert wait_until(lambda: self.live(provider, result.provider_id) is not None, self.settle_s)
        machine = self.live(provider, result.provider_id)
        assert machine is not None
        assert machine.node_id in (None, spec.node_id)

    def test_terminate_stops_it_and_is_idempotent(self, provider: Provider, launched: list[str]) -> None:
        first, second = provider.launch(self.spec(provider)), provider.launch(self.spec(provider))
        launched.extend([first.provider_id, second.provider_id])
        assert wait_until(lambda: self.live(provider, first.provider_id) is not None, self.settle_s)
        provider.terminate(first.provider_id)
        assert wait_until(lambda: self.live(provider, first.provider_id) is None, self.settle_s)
        provider.terminate(first.provider_id)  # already gone: not an error
        assert self.live(provider, second.provider_id) is not None  # only the one asked for stopped

    def test_offers_describe_the_pool(self, provider: Provider) -> None:
        offers = provider.offers()
        assert offers
        for offer in offers:
            assert offer.name
            assert offer.price_per_hour is None or offer.price_per_hour >= 0
