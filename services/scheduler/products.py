"""The scheduler's view of the product catalogue, read from the inventory service over gRPC.

Inventory owns product master data (DESIGN.md); the scheduler never stores products. Products
change rarely and every dose calculation needs one, so answers are cached for a short time
(``ttl_seconds``); an inventory outage turns into UNAVAILABLE for calls that need a product the
cache does not hold, never into a wrong dose.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import grpc
from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.inventory.v1 import inventory_pb2_grpc as inv_grpc

from services.common.errors import Unavailable


class InventoryProducts:
    def __init__(
        self,
        channel: grpc.Channel,
        *,
        ttl_seconds: float = 30.0,
        timeout_seconds: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stub = inv_grpc.InventoryServiceStub(channel)
        self._ttl = ttl_seconds
        self._timeout = timeout_seconds
        self._monotonic = monotonic
        self._cache: dict[str, tuple[float, inv.Product | None]] = {}
        self._lock = threading.Lock()

    def get(self, product_id: str) -> inv.Product | None:
        """The product, or None when inventory says it does not exist."""
        now = self._monotonic()
        with self._lock:
            hit = self._cache.get(product_id)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        try:
            product: inv.Product | None = self._stub.GetProduct(
                inv.GetProductRequest(id=product_id), timeout=self._timeout
            ).product
        except grpc.RpcError as error:
            code = error.code()
            if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                product = None
            else:
                raise Unavailable(
                    f"the inventory service could not be asked for product {product_id!r} "
                    f"({code.name}); try again shortly"
                ) from error
        with self._lock:
            self._cache[product_id] = (now, product)
        return product

    def exists(self, product_id: str) -> bool:
        product = self.get(product_id)
        return product is not None and product.active
