"""``python -m timm_lc.train`` (also ``accelerate launch -m timm_lc.train``): same as ``timm-lc train``."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
