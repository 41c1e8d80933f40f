"""``python -m timm_lc.train`` (also ``accelerate launch -m timm_lc.train``): same as ``timm-lc train``.

An entry point for the launcher, not part of the library: no library module imports it, and it
runs the command line's ``train`` (``timm_lc_cli.train``).
"""
import sys

from timm_lc_cli.train import main

if __name__ == "__main__":
    sys.exit(main())
