"""Locally connected layers: the functional op, the module, and the kernel selection."""
from .first_use import first_use_checks
from .kernels import get_lc_kernel, set_lc_kernel
from .lc_function import locally_connected2d, select_kernel
from .locally_connected import LocallyConnected2d, filters_to_kernel, kernel_to_filters

__all__ = ["LocallyConnected2d", "locally_connected2d", "get_lc_kernel", "set_lc_kernel", "select_kernel",
           "first_use_checks", "filters_to_kernel", "kernel_to_filters"]
