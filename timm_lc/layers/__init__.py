"""Locally connected layers."""
from .lc_function import LocallyConnected2dFunction, locally_connected2d, locally_connected2d_plain
from .locally_connected import (
    LocallyConnected2d, filters_to_kernel, kernel_to_filters, lc_output_size, resolve_padding)
