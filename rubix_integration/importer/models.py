"""The importer's bookkeeping: what each source table looked like when it was last imported."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

__all__ = ["IMPORT_STATE", "ImportState"]


class ImportState(SQLModel, table=True):
    """One source table as last imported into this store.

    ``signature`` describes the source file (sizes, modification times, change counter) so an
    untouched file is recognised without reading it; ``digest`` hashes the table's rows so a
    file changed elsewhere is recognised as unchanged for this table. Written in the same
    transaction as the table's rows.
    """

    __tablename__ = "rubix_import_state"

    source: str = Field(primary_key=True)
    table_name: str = Field(primary_key=True)
    signature: str
    digest: str
    rows: int
    imported_at: float


#: The Core table of :class:`ImportState`.
IMPORT_STATE: sa.Table = SQLModel.metadata.tables[ImportState.__tablename__]
