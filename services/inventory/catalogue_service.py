"""Catalogue use cases: validate with the domain's rules, store in one transaction."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

from services.common.clock import Clock
from services.common.db import Database
from services.common.errors import FieldViolation, InvalidArgument
from services.common.etag import check_etag
from services.common.ids import new_id
from services.common.pagination import PageRequest
from services.inventory.domain.catalogue import IgClass, Product, Route, validate_product
from services.inventory.store import products as store
from services.inventory.store.products import StoredProduct


def _validate(product: Product) -> None:
    problems = validate_product(product)
    if problems:
        raise InvalidArgument([FieldViolation(f"product.{path}", text) for path, text in problems])


class CatalogueService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def create(self, session: Session, product: Product, active: bool = True) -> StoredProduct:
        _validate(product)
        row = store.insert_product(session, new_id(), product, active, self.clock.now())
        return store.product_from_row(row)

    def get(self, key: str) -> StoredProduct:
        with self.db.read() as session:
            return store.product_from_row(store.product_row(session, key))

    def list(
        self,
        ig_class: IgClass | None,
        route: Route | None,
        include_inactive: bool,
        page: PageRequest,
    ) -> list[StoredProduct]:
        with self.db.read() as session:
            rows = store.list_products(session, ig_class, route, include_inactive, page)
            return [store.product_from_row(r) for r in rows]

    def update(
        self,
        session: Session,
        product_id: str,
        etag: str,
        change: Callable[[StoredProduct], tuple[Product, bool]],
    ) -> StoredProduct:
        row = store.product_row(session, product_id, for_update=True)
        check_etag(etag, row.revision, field="product.etag", resource=f"product {product_id}")
        product, active = change(store.product_from_row(row))
        _validate(product)
        row = store.update_product(session, row, product, active, self.clock.now())
        return store.product_from_row(row)

    def upsert_by_code(self, session: Session, product: Product) -> tuple[StoredProduct, bool]:
        """The seed's operation: create, or bring an existing product up to the file's data.
        Returns (product, changed)."""
        _validate(product)
        row = store.product_row_by_code(session, product.code)
        if row is None:
            return self.create(session, product), True
        current = store.product_from_row(row)
        if current.product == product:
            return current, False
        row = store.update_product(session, row, product, current.active, self.clock.now())
        return store.product_from_row(row), True
