"""Entry point of the ``timm-lc`` console script (the commands live in ``timm_lc.cli``).

It sits outside the package so that it can import ``timm_lc`` with its API deferred
(``timm_lc.DEFER_ENV``, set only during that import): ``import timm_lc`` registers the models
with timm, which takes seconds of torch and timm imports that ``timm-lc --help``,
``timm-lc train --help`` and usage errors do not need. ``timm_lc.cli`` loads the API before a
command runs.

It also sets ``GOMP_SPINCOUNT`` (unless set) before torch loads its OpenMP runtime: see main.
"""
import os
import sys

_DEFER_ENV = "_TIMM_LC_DEFER_API"  # = timm_lc.DEFER_ENV (the package cannot be imported to read it)
SPIN_ENV, SPIN_COUNT = "GOMP_SPINCOUNT", "1000"


def main() -> int:
    # An idle OpenMP thread spins this many times, then sleeps. libgomp's default (300000) keeps
    # threads spinning through the gaps between parallel regions, so when another process holds a
    # core each region waits for a descheduled thread: the LC layer, train step and sleep ran
    # 2.2-3.4x slower with one of 2 cores busy, 1.5-2.0x with 1000 (libgomp's own value for more
    # threads than cores), idle speed unchanged (`timm-lc bench --sections busy`).
    os.environ.setdefault(SPIN_ENV, SPIN_COUNT)
    os.environ[_DEFER_ENV] = "1"
    try:
        from timm_lc.cli import main as run
    finally:
        del os.environ[_DEFER_ENV]
    return run()


if __name__ == "__main__":
    sys.exit(main())
