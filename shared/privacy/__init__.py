"""Personal data kept out of what the services store and publish.

Free text is masked (``redaction.Redactor``); an identifier that is itself personal data
is refused (``identifiers.personal_data_kind``). Shared because intake and the metrics
API both take words from people, and services never import one another.
"""

from shared.privacy.identifiers import personal_data_kind, refusal_reason
from shared.privacy.redaction import RedactionResult, Redactor

__all__ = ["RedactionResult", "Redactor", "personal_data_kind", "refusal_reason"]
