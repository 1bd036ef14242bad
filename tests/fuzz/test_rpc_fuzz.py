"""Every RPC of the three services, fuzzed through real gRPC servers on SQLite and PostgreSQL.

Each request goes to both stacks: neither may answer INTERNAL or UNKNOWN (a user's mistake is
never a server error), and both must answer the same status code (one contract, whatever the
database). First a sweep of the hostile classes over every field (tests/fuzz/hostile.py), of
empty requests and of valid ones (tests/fuzz/seeds.py), then Hypothesis's random requests:
FUZZ_EXAMPLES of them (default 300 here; ``make fuzz`` runs 2,000), from a fixed seed unless
FUZZ_SEED names another.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import grpc
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from tests.fuzz.hostile import hostile_requests, message_strategy
from tests.fuzz.seeds import seeds
from tests.fuzz.stacks import METHODS, Stack, running_stack

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(900)]

SERVER_ERRORS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))


@pytest.fixture
def stacks(sqlite_url: str, postgres_url: str) -> Iterator[tuple[Stack, Stack]]:
    with running_stack("sqlite", sqlite_url) as lite, running_stack("postgres", postgres_url) as pg:
        yield lite, pg


def _answers(stacks: tuple[Stack, Stack], method: object, request: object) -> list[str]:
    """What is wrong with the two answers to one request (empty when nothing is)."""
    codes = [s.call(method, request) for s in stacks]  # type: ignore[arg-type]
    problems = [
        f"{s.name} answered {c.name}"
        for s, c in zip(stacks, codes, strict=True)
        if c in SERVER_ERRORS
    ]
    if codes[0] != codes[1]:
        problems.append(f"sqlite answered {codes[0].name}, postgres {codes[1].name}")
    return problems


def test_hostile_values_in_every_field_of_every_rpc(stacks: tuple[Stack, Stack]) -> None:
    failures: list[str] = []
    sent = 0
    for method in METHODS:
        for label, request in hostile_requests(method.input_type):
            sent += 1
            failures += [f"{method.name} {label}: {p}" for p in _answers(stacks, method, request)]
    assert sent > 1000
    assert not failures, "\n".join(failures[:50]) + f"\n({len(failures)} of {sent} calls)"


def test_hostile_values_in_valid_requests(stacks: tuple[Stack, Stack]) -> None:
    """One field at a time changed in a request the service accepts: values the contract lets
    through (extreme integers, far dates) reach the services' rules and the databases."""
    by_name = {m.name: m for m in METHODS}
    failures: list[str] = []
    for name, base in seeds().items():
        method = by_name[name.partition(":")[0]]
        assert stacks[0].call(method, base) == grpc.StatusCode.OK, name
        assert stacks[1].call(method, base) == grpc.StatusCode.OK, name
        for label, request in hostile_requests(method.input_type, base):
            failures += [f"{name} {label}: {p}" for p in _answers(stacks, method, request)]
    assert not failures, "\n".join(failures[:50]) + f"\n({len(failures)} failures)"


def test_random_requests_to_every_rpc(stacks: tuple[Stack, Stack]) -> None:
    calls = st.sampled_from(METHODS).flatmap(
        lambda m: st.tuples(st.just(m), message_strategy(m.input_type))
    )

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize="FUZZ_SEED" not in os.environ,
        suppress_health_check=list(HealthCheck),
    )
    @given(call=calls)
    def one(call: tuple[object, object]) -> None:
        method, request = call
        problems = _answers(stacks, method, request)
        assert not problems, f"{method.name}({request}): {problems}"  # type: ignore[attr-defined]

    if "FUZZ_SEED" in os.environ:
        one = seed(int(os.environ["FUZZ_SEED"]))(one)
    one()
