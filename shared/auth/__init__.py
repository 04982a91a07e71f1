"""API keys shared by every service that takes requests: made, stored as a hash, checked.

Intake checks write scopes, the metrics service the ``read`` scope; both read one auth
database (``DEMANDSCOPE_AUTH_DATABASE_URL``), migrated by ``shared.auth.migrate.upgrade``.
"""

from shared.auth.keys import ApiKeyRecord, Scope

__all__ = ["ApiKeyRecord", "Scope"]
