"""demands and everything keyed by a demand: (source, id); customers and cases per source

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26

A demand is (source, id) (docs/architecture.md, "Sources and the organisation"): a second
source's demand with an id another source used was dropped here as a redelivery. The
received tables take the source into their keys; the derived and queue tables carry it.

Existing rows stay valid: every demand id was unique, so each row keyed by a demand id
takes that demand's source; a label takes its demand's source (the empty source when its
demand has not arrived: such a label applies to the one demand of its id, as an old label
without ``demand_source`` does); a case event without a source keeps the empty one; a case
takes its customer's demands' source (else its case events'). ``demandscope metrics
rebuild`` recomputes the derived rows.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BY_DEMAND = "(SELECT d.source FROM demands d WHERE d.demand_id = {table}.demand_id)"
_BY_CUSTOMER = "(SELECT MIN(d.source) FROM demands d WHERE d.customer_ref = cases.customer_ref)"
_CASE_BY_EVENTS = (
    "(SELECT NULLIF(MIN(e.source), '') FROM case_events e "
    "WHERE e.customer_ref = cases.customer_ref AND e.case_ref = cases.case_ref)"
)

# table, the new column, how existing rows get it, the new primary key
_TABLES: list[tuple[str, str | None, str, list[str]]] = [
    ("demands", None, "", ["source", "demand_id"]),
    ("case_events", None, "''", ["source", "event_id"]),
    ("demand_labels", "demand_source", _BY_DEMAND, ["demand_source", "label_id"]),
    ("demand_facts", "source", _BY_DEMAND, ["source", "demand_id"]),
    # Every demand id was unique and a customer's demands came from its one source so far.
    ("cases", "source", f"COALESCE({_BY_CUSTOMER}, {_CASE_BY_EVENTS})", []),
    ("audit_items", "source", _BY_DEMAND, ["source", "demand_id"]),
    ("queue_texts", "source", _BY_DEMAND, ["source", "demand_id"]),
]
_PRIMARY_KEYS = {"cases": ["source", "customer_ref", "case_id"]}
# old index -> new index and its columns
_INDEXES = {
    "demands": [
        ("ix_demands_customer", "ix_demands_customer", ["source", "customer_ref", "occurred_at"])
    ],
    "case_events": [
        ("ix_case_events_customer_ref", "ix_case_events_customer", ["source", "customer_ref"])
    ],
    "demand_labels": [
        ("ix_demand_labels_demand_id", "ix_demand_labels_demand", ["demand_id", "demand_source"])
    ],
    "demand_facts": [
        ("ix_demand_facts_customer_ref", "ix_demand_facts_customer", ["source", "customer_ref"])
    ],
}
_OLD_KEYS = {
    "demands": ["demand_id"],
    "case_events": ["event_id"],
    "demand_labels": ["label_id"],
    "demand_facts": ["demand_id"],
    "cases": ["customer_ref", "case_id"],
    "audit_items": ["demand_id"],
    "queue_texts": ["demand_id"],
}


def upgrade() -> None:
    for table, column, fill, key in _TABLES:
        key = _PRIMARY_KEYS.get(table, key)
        if column is not None:
            op.add_column(table, sa.Column(column, sa.String(200), nullable=True))
            value = fill.format(table=table)
            op.execute(f"UPDATE {table} SET {column} = COALESCE({value}, '')")
        if table == "case_events":
            op.execute("UPDATE case_events SET source = '' WHERE source IS NULL")
        for old, _new, _columns in _INDEXES.get(table, []):
            op.drop_index(old, table_name=table)
        with op.batch_alter_table(table, recreate="always") as batch:
            if column is not None or table == "case_events":
                batch.alter_column(column or "source", existing_type=sa.String(200), nullable=False)
            batch.drop_constraint(f"pk_{table}", type_="primary")
            batch.create_primary_key(f"pk_{table}", key)
        for _old, new, columns in _INDEXES.get(table, []):
            op.create_index(new, table, columns)
    op.create_index("ix_demands_demand_id", "demands", ["demand_id"])


def downgrade() -> None:
    # Back to one row per id: where two sources share an id, all but one row must go first.
    op.drop_index("ix_demands_demand_id", table_name="demands")
    for table, column, _fill, _key in reversed(_TABLES):
        for _old, new, _columns in _INDEXES.get(table, []):
            op.drop_index(new, table_name=table)
        with op.batch_alter_table(table, recreate="always") as batch:
            batch.drop_constraint(f"pk_{table}", type_="primary")
            batch.create_primary_key(f"pk_{table}", _OLD_KEYS[table])
            if column is not None:
                batch.drop_column(column)
            elif table == "case_events":
                batch.alter_column("source", existing_type=sa.String(200), nullable=True)
        for old, _new, _columns in _INDEXES.get(table, []):
            old_columns = ["demand_id"] if table == "demand_labels" else ["customer_ref"]
            if table == "demands":
                old_columns = ["customer_ref", "occurred_at"]
            op.create_index(old, table, old_columns)
