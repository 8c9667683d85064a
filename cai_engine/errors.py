"""The engine's user-facing exceptions. Each message names what is wrong and where."""


class CaiError(Exception):
    """Base class for errors that the CLI and the studio show to the user as one clear message."""


class StoreLockedError(CaiError):
    """Another process holds the DuckDB file read-write and did not let go in time."""


class NotFoundError(CaiError):
    """A named thing (constitution, version, prompt set, job) does not exist."""


class JobCancelled(Exception):
    """Raised inside a job once SIGTERM has arrived; the runner records it as cancelled.

    It lives here, not in runner.py, so that a job body importing it and the runner running
    as `__main__` see the same class.
    """
