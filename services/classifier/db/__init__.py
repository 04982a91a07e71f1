"""The classifier's database: people's labels and the demand texts they refer to (tables,
Alembic migrations, and ``repository.py``, which holds every query)."""
