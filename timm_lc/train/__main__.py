"""``python -m timm_lc.train`` (also ``accelerate launch -m timm_lc.train``): same as ``timm-lc train``."""
import sys

from ..commands.train import main

if __name__ == "__main__":
    sys.exit(main())
