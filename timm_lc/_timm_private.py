"""The timm helpers timm-lc uses that timm does not export from a public module (the one place that imports them).

``feature_take_indices`` (timm.models._features) selects ``forward_intermediates`` outputs as every
timm model does; ``save_config_for_hf`` (timm.models._hub) writes the ``config.json`` that
``timm.create_model("local-dir:...")`` and ``"hf-hub:..."`` read.
"""
from timm.models._features import feature_take_indices
from timm.models._hub import save_config_for_hf

__all__ = ["feature_take_indices", "save_config_for_hf"]
