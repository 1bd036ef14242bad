"""What every service's tables share. Each service keeps its OWN declarative ``Base`` and so its
own ``MetaData``: its Alembic migrations see only its tables. What is shared is how that
MetaData names constraints (so a migration's generated names match the models') and the columns
of a row that is edited under an ETag."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Integer, MetaData, Table
from sqlalchemy.orm import Mapped, mapped_column

from services.common.audit.store import AuditTables, define_audit_tables
from services.common.db import UtcDateTime
from services.common.idempotency import define_idempotency_table

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def service_metadata() -> MetaData:
    """A new MetaData with the shared naming convention, for one service's ``Base``."""
    return MetaData(naming_convention=NAMING_CONVENTION)


def define_request_tables(metadata: MetaData, service: str) -> tuple[Table, AuditTables]:
    """The tables every service's requests write besides its own: the idempotency keys that
    make a retried mutation answer as before, and the audit trail."""
    return define_idempotency_table(metadata, service), define_audit_tables(metadata, service)


class Revisioned:
    """A row edited under an ETag: the revision it carries and when it was made and last changed."""

    revision: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, nullable=False)
