from __future__ import annotations

from typing import Any


class DoseService:
    def __init__(self, cases: Any, products: Any) -> None: ...
    def calculate_proto(self, request: Any) -> Any:
        raise NotImplementedError
