"""What a regimen rule refuses, as a value the caller can branch on.

A stable lower-case code (the names docs/clinical-rules.md uses, such as ``payer_cap_exceeded``)
keeps the pure rules free of the service's error catalogue; the use cases that serve them map
each code to a FAILED_PRECONDITION rule of its own (services/scheduler/usecases/regimens.py).
"""

from __future__ import annotations


class Refused(Exception):
    """A rule cannot give a result for these inputs; ``text`` says why and what to do."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text
