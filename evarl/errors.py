"""Errors the CLI reports as one line and exit code 2 (expected failures, not bugs). Bottom layer: no imports."""

from __future__ import annotations


class ResumeError(RuntimeError):
    """A saved training state that cannot be continued as asked (e.g. a different global batch)."""


class WorkerLost(RuntimeError):
    """A worker (a Ray actor, a process) died while computing a chunk. Finished chunks are kept; the message
    says so and that rerunning the same command resumes."""


class EndpointError(RuntimeError):
    """An OpenAI-compatible endpoint that cannot be used as configured (a key over plain http to another host),
    or a request that failed for good (refused, unreachable, a non-retryable status, retries exhausted). The
    message names the URL and never holds the API key. ``status`` is the HTTP status when there was one;
    ``fatal`` marks a failure of the whole endpoint (unreachable, bad key, unknown model), not of one request."""

    def __init__(self, message: str, status: int | None = None, fatal: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.fatal = fatal


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite. Training stopped before saving anything from that step: the
    last good resumable checkpoint (if any) and every earlier artifact are left as they were."""


class UploadError(RuntimeError):
    """An upload (``model.push_to_hub``) that failed; the run's files are complete and a rerun retries it."""


class PluginError(RuntimeError):
    """A plug-in module (config `plugins:` or an `evarl.plugins` entry point) that could not be imported or
    failed while registering; the message names the module and the first problem, nothing was run."""
