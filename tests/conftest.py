import os

from timm_lc_settings.openmp import SPIN_COUNT, SPIN_ENV

os.environ.setdefault(SPIN_ENV, SPIN_COUNT)  # the timm-lc command's thread setting, before torch loads

pytest_plugins = ["conftest_hub"]
