"""How the Hub's answers read: the HTTP status of an error and a clear message for each known one."""
from typing import Optional

from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

__all__ = ["hub_error_message", "http_status"]


def http_status(err: Exception) -> Optional[int]:
    """The HTTP status of an error's response.

    Args:
        err: any exception.

    Returns:
        The status code, or None when the error carries no response.
    """
    return getattr(getattr(err, "response", None), "status_code", None)


def hub_error_message(err: Exception, repo_id: str, revision: Optional[str], action: str) -> Optional[str]:
    """A clear message for a huggingface_hub error.

    Args:
        err: the error huggingface_hub raised.
        repo_id: the repo the action concerned.
        revision: its revision (None: main).
        action: what was being done, the message's opening words.

    Returns:
        The message, or None if the error is not one we know.
    """
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
