"""How the Hub's answers read: which errors are transient (retried) and a clear message for each known one."""
from typing import List, Optional, Tuple

from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

__all__ = ["RETRY_STATUS", "TRANSIENT_ERRORS", "hub_error_message", "http_status"]

RETRY_STATUS = (408, 429, 500, 502, 503, 504)


def _transient_errors() -> Tuple[type, ...]:
    """Network-level exception types of the HTTP client huggingface_hub uses (httpx, httpx2 or requests)."""
    import importlib
    errors: List[type] = [ConnectionError, TimeoutError]
    for module, name in (("httpx", "TransportError"), ("httpx2", "TransportError"),
                         ("requests.exceptions", "ConnectionError"),
                         ("requests.exceptions", "Timeout")):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


TRANSIENT_ERRORS = _transient_errors()


def http_status(err: Exception) -> Optional[int]:
    """The HTTP status of an error's response, if it has one."""
    return getattr(getattr(err, "response", None), "status_code", None)


def hub_error_message(err: Exception, repo_id: str, revision: Optional[str], action: str) -> Optional[str]:
    """A clear message for a huggingface_hub error, or None if it is not one we know."""
    rev = revision or "main"
    if isinstance(err, RevisionNotFoundError):
        return f"{action}: revision '{rev}' does not exist in '{repo_id}'."
    if isinstance(err, RepositoryNotFoundError):
        return (f"{action}: repository '{repo_id}' was not found (or it is private/gated and the token "
                f"used has no access to it).")
    if isinstance(err, EntryNotFoundError) and not isinstance(err, LocalEntryNotFoundError):
        return f"{action}: the file does not exist in '{repo_id}' at revision '{rev}'."
    if isinstance(err, HfHubHTTPError):
        status = http_status(err)
        if status == 401:
            return f"{action}: the Hub rejected the token (401). Check it with `hf auth whoami`."
        if status == 403:
            return f"{action}: the token has no write access to '{repo_id}' (403)."
        return f"{action}: the Hub answered {status}: {str(err).splitlines()[0]}"
    return None
