"""``python -m timm_lc.studies.bench``: same as ``timm-lc bench`` (an entry point; no library module imports it)."""
import sys

from timm_lc_cli.bench import main

sys.exit(main())
