"""The OpenMP spin count the ``timm-lc`` command runs with (set before torch loads its OpenMP runtime).

An idle OpenMP thread spins ``GOMP_SPINCOUNT`` times, then sleeps. libgomp's default (300000)
keeps threads spinning through the gaps between parallel regions, so when another process holds
a core each region waits for a descheduled thread; 1000 is libgomp's own value for more threads
than cores. ``timm-lc bench --sections busy`` measures the effect.
"""
__all__ = ["SPIN_ENV", "SPIN_COUNT"]

SPIN_ENV, SPIN_COUNT = "GOMP_SPINCOUNT", "1000"
