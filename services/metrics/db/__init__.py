"""Persistence of the metrics service: tables, engine, migrations."""
