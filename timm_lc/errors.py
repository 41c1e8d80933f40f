"""The errors of reading, publishing and loading checkpoints (re-exported by ``timm_lc.hub``)."""

__all__ = ["HubError", "CorruptCheckpointError", "UnknownArchitectureError"]


class HubError(RuntimeError):
    """A publish or download step failed; the message says what and what to do."""


class CorruptCheckpointError(HubError):
    """A weights file is truncated or not valid safetensors."""


class UnknownArchitectureError(HubError):
    """The checkpoint's architecture is not registered with timm."""
