"""Catalogue use cases: validate with the domain's rules, store in one transaction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from services.common.clock import Clock
from services.common.db import Database
from services.common.errors import FieldViolation, InvalidArgument, NotFound
from services.common.etag import check_etag
from services.common.ids import new_id
from services.common.pagination import PageRequest
from services.common.snapshot import Snapshot
from services.inventory.domain.catalogue import (
    IgClass,
    Presentation,
    Product,
    Route,
    StoredProduct,
    validate_product,
)
from services.inventory.store import products as store


def _validate(product: Product) -> None:
    problems = validate_product(product)
    if problems:
        raise InvalidArgument([FieldViolation(f"product.{path}", text) for path, text in problems])


@dataclass(frozen=True)
class _Loaded:
    """The catalogue in id order, and indexed by what requests name products by."""

    products: tuple[StoredProduct, ...]
    by_key: dict[str, StoredProduct]  # id or code
    by_gtin: dict[str, tuple[StoredProduct, Presentation]]

    @classmethod
    def of(cls, products: tuple[StoredProduct, ...]) -> _Loaded:
        by_key: dict[str, StoredProduct] = {}
        by_gtin: dict[str, tuple[StoredProduct, Presentation]] = {}
        # backwards, so that where two products share a key the first in id order keeps it
        for stored in reversed(products):
            for presentation in reversed(stored.product.presentations):
                if presentation.gtin is not None:
                    by_gtin[presentation.gtin] = (stored, presentation)
            by_key[stored.product.code] = stored
            by_key[stored.id] = stored
        return cls(products, by_key, by_gtin)


class Catalogue:
    """Reads come from an in-memory snapshot of the whole catalogue (tens of products, read on
    every dose calculation and reservation, changed a few times a year), indexed by id, code
    and GTIN; writes go to the database and invalidate it. Another replica's write is visible
    here within ``max_age_seconds``: that often one cheap query asks whether any product
    changed, and only then is the catalogue read again."""

    def __init__(self, db: Database, clock: Clock, *, max_age_seconds: float = 1.0) -> None:
        self.db = db
        self.clock = clock
        self._snapshot = Snapshot(
            self._load_all, max_age_seconds=max_age_seconds, version=self._version
        )

    def _load_all(self) -> _Loaded:
        with self.db.read() as session:
            return _Loaded.of(tuple(store.product_from_row(r) for r in store.all_products(session)))

    def _version(self) -> object:
        with self.db.single_read() as connection:
            return store.catalogue_version(connection)

    def create(self, session: Session, product: Product, active: bool = True) -> StoredProduct:
        _validate(product)
        row = store.insert_product(session, new_id(), product, active, self.clock.now())
        self._snapshot.invalidate()
        return store.product_from_row(row)

    def get(self, key: str) -> StoredProduct:
        """By id, or by code (a human-friendly alias)."""
        stored = self._snapshot.get().by_key.get(key)
        if stored is None:
            raise NotFound("product", key)
        return stored

    def find_presentation(self, gtin: str) -> tuple[StoredProduct, Presentation] | None:
        """The product and vial size a scanned GTIN-14 stands for."""
        return self._snapshot.get().by_gtin.get(gtin)

    def list(
        self,
        ig_class: IgClass | None,
        route: Route | None,
        include_inactive: bool,
        page: PageRequest,
    ) -> list[StoredProduct]:
        """Ordered by id; ``page.size + 1`` items so the caller can tell a next page exists."""
        after = page.after[0] if page.after else ""
        chosen = [
            s
            for s in self._snapshot.get().products
            if s.id > after
            and (include_inactive or s.active)
            and (ig_class is None or s.product.ig_class is ig_class)
            and (route is None or route in s.product.routes)
        ]
        return chosen[: page.size + 1]

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
        self._snapshot.invalidate()
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
        self._snapshot.invalidate()
        return store.product_from_row(row), True
