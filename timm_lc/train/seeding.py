"""Seeds derived from tuples of integers, identical on every process, platform and Python run."""
import contextlib
import hashlib
import random
from typing import Iterator

import torch

__all__ = ["derive_seed", "seeded"]


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, e.g. ``derive_seed(seed, step)`` (stable, unlike ``hash``).

    Args:
        *parts: integers, each within the signed 64-bit range; their order matters.

    Returns:
        A non-negative int below 2**63 (BLAKE2b of the parts).
    """
    data = b"".join(int(p).to_bytes(8, "little", signed=True) for p in parts)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") & 0x7FFF_FFFF_FFFF_FFFF


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Runs the block with torch's CPU RNG and Python's ``random`` seeded, restoring both afterwards.

    Lets RNG-driven transforms (timm's and torchvision's) produce a reproducible result per
    sample without touching the training loop's global random state.

    Args:
        seed: the seed for both generators.

    Yields:
        None; the block runs with the seeded generators.
    """
    py_state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
