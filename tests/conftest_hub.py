"""Fixtures for the Hub tests: a loopback Hub server that huggingface_hub and timm talk to.

huggingface_hub reads ``HF_ENDPOINT`` (and ``HF_HOME``, ``HF_HUB_DISABLE_XET``) once, when it is
imported (``huggingface_hub/constants.py``). This plugin is loaded from ``tests/conftest.py``
before any test module imports timm or huggingface_hub, so it binds the server's socket now
(port 0: a free port), points ``HF_ENDPOINT`` at it, and only starts serving in the session
fixture. Every test session therefore talks to the loopback server, never to huggingface.co,
with an empty temporary ``HF_HOME`` (no cached files, no saved token).
"""
import os
import shutil
import sys
import tempfile

import pytest

from hub_server import LoopbackHub

HUB_TOKEN = "hf_loopback_write"

_ALREADY_IMPORTED = "huggingface_hub" in sys.modules
_SERVER = LoopbackHub(tokens=(HUB_TOKEN,))
_HF_HOME = tempfile.mkdtemp(prefix="timm-lc-hf-home-")
os.environ.update(
    HF_ENDPOINT=_SERVER.endpoint,
    HF_HOME=_HF_HOME,
    HF_HUB_DISABLE_XET="1",
    HF_HUB_DISABLE_TELEMETRY="1",
    HF_HUB_DISABLE_UPDATE_CHECK="1",
    HF_HUB_DISABLE_PROGRESS_BARS="1",
)
for _var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE",
             "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.pop(_var, None)


@pytest.fixture(scope="session")
def hub_server():
    """The running loopback Hub (``tests/hub_server.py``), shared by the session."""
    import huggingface_hub.constants

    if _ALREADY_IMPORTED or huggingface_hub.constants.ENDPOINT != _SERVER.endpoint:
        pytest.fail(f"huggingface_hub was imported before tests/conftest_hub.py set HF_ENDPOINT "
                    f"(it uses {huggingface_hub.constants.ENDPOINT}); the Hub tests cannot run safely")
    _SERVER.start()
    yield _SERVER
    _SERVER.stop()
    shutil.rmtree(_HF_HOME, ignore_errors=True)


@pytest.fixture
def hub(hub_server):
    """The loopback Hub, with fault injection cleared after the test."""
    yield hub_server
    hub_server.reset_faults()


@pytest.fixture(scope="session")
def hub_token() -> str:
    """A token the loopback Hub accepts for writes."""
    return HUB_TOKEN


def pytest_unconfigure(config):
    """The socket is bound at import, also in sessions that never use the server: release it."""
    _SERVER.server_close()
    shutil.rmtree(_HF_HOME, ignore_errors=True)
