"""Intake's own database: the idempotency ledger of accepted event ids."""
