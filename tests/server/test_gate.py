"""The front door (`server.gate`): a flood of random tokens is refused after one shared read of the live ids, with
no lookup each; a token created a moment before it is presented gets in; a failed read is a retryable store error."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from tests.helpers import run_async
from zeroloop.config import ServerSettings
from zeroloop.control.tokens import Role, Tokens
from zeroloop.errors import AuthError, StoreUnavailable
from zeroloop.server.gate import Gate
from zeroloop.store.database import Store


def _random_token() -> str:
    return f"zl_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


async def _refused(gate: Gate, address: str, presented: str) -> str:
    try:
        await gate.admit(address, presented)
    except AuthError as exc:
        return str(exc)
    return "admitted"


@run_async
async def test_a_flood_of_random_tokens_costs_one_read_of_the_ids_and_no_lookup(store: Store) -> None:
    tokens = Tokens(store, negative_cache_s=60.0)
    tokens.create(Role.WORKER, node="w1")
    gate = Gate(tokens, ServerSettings(), loopback=False)
    try:
        answers = await asyncio.gather(*(_refused(gate, f"10.0.0.{n}", _random_token()) for n in range(200)))
        assert all(answer.endswith("is not valid: check ZEROLOOP_SERVER__TOKEN") for answer in answers), answers[:3]
        assert (tokens.id_reads, tokens.lookups) == (1, 0)
        assert gate.unverified == 0  # nobody took a place among the unverified
    finally:
        gate.close()


@run_async
async def test_a_token_created_after_the_last_read_of_the_ids_is_admitted(store: Store) -> None:
    tokens = Tokens(store)
    gate = Gate(tokens, ServerSettings(), loopback=False)
    try:
        assert (await _refused(gate, "10.0.0.1", _random_token())).startswith("token ")  # the ids are read now
        created, _ = tokens.create(Role.WORKER, node="w1")  # after that read, before the next
        admitted = await gate.admit("10.0.0.2", created)
        assert admitted.unverified and tokens.id_reads == 2  # a read begun after it arrived found it
        gate.done(admitted)
        credential = "zlc_" + created.split("_", 2)[1] + "_" + "x" * 43  # an id no credential has
        assert (await _refused(gate, "10.0.0.3", credential)).endswith("the worker exchanges its token again")
    finally:
        gate.close()


@run_async
async def test_a_failed_read_of_the_ids_is_a_store_error_and_the_next_request_reads_again(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = Tokens(store)
    created, _ = tokens.create(Role.WORKER, node="w1")
    gate = Gate(tokens, ServerSettings(), loopback=False)
    real = tokens.refresh_ids

    def down(*, within_s: float) -> None:
        raise StoreUnavailable("the store is out")

    try:
        monkeypatch.setattr(tokens, "refresh_ids", down)
        with pytest.raises(StoreUnavailable):
            await gate.admit("10.0.0.1", created)
        monkeypatch.setattr(tokens, "refresh_ids", real)
        admitted = await gate.admit("10.0.0.1", created)
        assert admitted.unverified
        gate.done(admitted)
    finally:
        gate.close()
