"""Errors the CLI reports as one line and exit code 2 (expected failures, not bugs). Bottom layer: no imports."""

from __future__ import annotations


class ResumeError(RuntimeError):
    """A saved training state that cannot be continued as asked (e.g. a different global batch)."""


class WorkerLost(RuntimeError):
    """A worker (a Ray actor, a process) died while computing a chunk. Finished chunks are kept; the message
    says so and that rerunning the same command resumes."""
