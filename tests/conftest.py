import os

os.environ.setdefault("GOMP_SPINCOUNT", "1000")  # the timm-lc command's thread setting (timm_lc_cli), before torch loads

pytest_plugins = ["conftest_hub"]
