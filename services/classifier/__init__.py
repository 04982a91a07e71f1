"""The classifier service."""

import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType


class _WithoutPandas(MetaPathFinder):
    """scikit-learn imports pandas whenever it is installed (about a fifth of a start), and
    nothing the classifier serves needs it: pandas is no dependency of the service, only the
    bench extra's PM4Py brings it. Serving, it is not found, as on a production image."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname == "pandas" or fullname.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


if sys.argv[1:3] == ["classifier", "serve"] and "pandas" not in sys.modules:
    sys.meta_path.insert(0, _WithoutPandas())
