"""timm-lc: locally connected networks for timm, with sleep-phase weight sharing.

Importing ``timm_lc`` registers the ``lc_resnet*`` models with timm (timm has no plugin entry
points), so ``import timm_lc`` must come before ``timm.create_model("lc_resnet...")``. The
``timm-lc`` console script imports the package with that deferred (``DEFER_ENV``) so that
``--help`` and usage errors do not wait seconds for torch and timm; it loads the API before a
command runs.
"""
import os

__version__ = "0.1.0"
DEFER_ENV = "_TIMM_LC_DEFER_API"


def _load_api() -> None:
    """Imports the public API (``timm_lc._api``) into this package, registering the models with timm."""
    from . import _api
    globals().update({name: getattr(_api, name) for name in _api.__all__}, __all__=list(_api.__all__))


if os.environ.get(DEFER_ENV) != "1":
    _load_api()
