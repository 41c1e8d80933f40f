"""``python -m timm_lc_cli``: the ``timm-lc`` command."""
import sys

from . import main

sys.exit(main())
