"""Entry point of the ``timm-lc`` console script (the commands live in ``timm_lc.cli``).

It sits outside the package so that it can import ``timm_lc`` with its API deferred
(``timm_lc.DEFER_ENV``, set only during that import): ``import timm_lc`` registers the models
with timm, which takes seconds of torch and timm imports that ``timm-lc --help``,
``timm-lc train --help`` and usage errors do not need. ``timm_lc.cli`` loads the API before a
command runs.
"""
import os
import sys

_DEFER_ENV = "_TIMM_LC_DEFER_API"  # = timm_lc.DEFER_ENV (the package cannot be imported to read it)


def main() -> int:
    os.environ[_DEFER_ENV] = "1"
    try:
        from timm_lc.cli import main as run
    finally:
        del os.environ[_DEFER_ENV]
    return run()


if __name__ == "__main__":
    sys.exit(main())
