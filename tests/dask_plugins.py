"""Dask worker plugins for the tests (a module of its own: workers import it by reference)."""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

import remote_jobs


class HideJobdispatch(WorkerPlugin):
    """Make jobdispatch unimportable on the workers, as where it is not installed."""

    def setup(self, worker: Any) -> None:
        remote_jobs.hide_jobdispatch()
