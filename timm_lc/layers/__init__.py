"""Locally connected layers."""
from .kernels import get_lc_kernel, set_lc_kernel
from .lc_function import LocallyConnected2dFunction, locally_connected2d, locally_connected2d_plain, select_kernel
from .locally_connected import (
    LocallyConnected2d, filters_to_kernel, kernel_to_filters, lc_output_size, resolve_padding)
