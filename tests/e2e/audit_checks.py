"""What the e2e scenario checks of the audit trail and of secrets, after its day: every
mutation the services answered OK has exactly one record (a replayed request_id none more),
every patient read past the gate has one, each service's chain verifies and exports as valid
FHIR R4; no Get/List answer and no log line carries a secret."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from sqlalchemy import create_engine

from services.common.audit.__main__ import store_for
from services.common.audit.fhir import bundle_json
from services.common.audit.record import MUTATION, PATIENT_READ, AuditRecord
from services.common.audit.store import Link
from services.common.audit.verify import verify
from services.common.auth.policy import AuditKind, policy_of
from tests.e2e.harness import Fleet

# refused before the audit interceptor: no token, no permission, no capacity
GATE_CODES = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED"})
KINDS = {AuditKind.AUDIT_KIND_MUTATION: MUTATION, AuditKind.AUDIT_KIND_PATIENT_READ: PATIENT_READ}


class ResponseRecorder(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Keeps the serialized answer of every Get/List the test makes through its channels."""

    def __init__(self) -> None:
        self.answers: list[tuple[str, bytes]] = []

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        outcome = continuation(details, request)
        name = details.method.rpartition("/")[2]
        if name.startswith(("Get", "List")) and outcome.exception() is None:
            self.answers.append((details.method, outcome.result().SerializeToString()))
        return outcome

    def check(self, secrets: Iterable[str]) -> int:
        for method, answer in self.answers:
            for secret in secrets:
                assert secret.encode() not in answer, f"{method} answered a secret"
        return len(self.answers)


def access_lines(processes: Fleet, name: str) -> list[dict[str, Any]]:
    lines = []
    for text in processes.log_path(name).read_text().splitlines():
        line = json.loads(text)
        if line.get("logger") == "grpc.access":
            lines.append(line)
    return lines


def chain(processes: Fleet, name: str) -> tuple[list[Link], list[str], int]:
    """The service's chain, records outside it, records pending (after the services stopped:
    each linked what it had left)."""
    engine = create_engine(processes.env[f"{name.upper()}_DATABASE_URL"])
    store = store_for(name)
    try:
        with engine.connect() as connection:
            return (
                list(store.walk(connection)),
                store.outside_chain(connection),
                store.pending_count(connection),
            )
    finally:
        engine.dispose()


def check_audit(processes: Fleet) -> dict[str, int]:
    """Per service: the trail against the access log. Returns the records per service."""
    counted = {}
    for name in processes.services:
        links, outside, pending = chain(processes, name)
        verdict = verify(links, outside)
        assert verdict.intact, f"{name}: {verdict.broken}"
        assert pending == 0, f"{name}: {pending} records left unlinked"
        trail: list[AuditRecord] = [link.record for link in links if link.record is not None]
        assert len(bundle_json(trail)["entry"]) == len(trail)  # valid FHIR R4 AuditEvents
        answered: Counter[tuple[str, str]] = Counter()  # mutations answered OK, by request
        reads: Counter[str] = Counter()
        for line in access_lines(processes, name):
            policy = policy_of(line["method"])
            kind = KINDS.get(policy.audit) if policy is not None else None
            if kind == MUTATION and line["code"] == "OK":
                answered[(line["method"], line["request_id"])] += 1
            elif kind == PATIENT_READ and line["code"] not in GATE_CODES:
                reads[line["method"]] += 1
        mutations = Counter((r.method, r.request_id) for r in trail if r.kind == MUTATION)
        # a request_id answered OK twice was replayed: one record; without one, each call is
        assert {k: n for k, n in mutations.items() if k[1]} == {k: 1 for k in answered if k[1]}
        assert {k: n for k, n in mutations.items() if not k[1]} == {
            k: n for k, n in answered.items() if not k[1]
        }
        assert Counter(r.method for r in trail if r.kind == PATIENT_READ) == reads, name
        assert all(r.outcome == "OK" for r in trail if r.kind == MUTATION)
        counted[name] = len(trail)
    return counted


def secret_patterns(secrets: Iterable[str]) -> list[str]:
    return [re.escape(s) for s in secrets]
