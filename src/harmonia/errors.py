"""The exception tree. Raised inside the package, translated to HTTP/CLI answers only at the edges
(`harmonia.asgi.STATUS_FOR` is the one table of HTTP statuses)."""

from __future__ import annotations


class HarmoniaError(Exception):
    """Base of every error Harmonia raises on purpose. `field` names the input at fault, if any."""

    code = "error"

    def __init__(self, message: str = "", field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(HarmoniaError):
    """A request or payload that cannot be served as given (maps to 422)."""

    code = "invalid_input"


class NotFound(HarmoniaError):
    code = "not_found"


class Conflict(HarmoniaError):
    code = "conflict"


class DependencyDown(HarmoniaError):
    """Redis, a model service or another dependency cannot be reached (maps to 503)."""

    code = "dependency_down"


class EngineError(HarmoniaError):
    """An engine could not produce a result; the job fails with this message. Not retried."""

    code = "engine_error"


class UpstreamError(EngineError):
    """A server the engine relies on (an LLM server) answered, but not usefully: an error status, a
    broken stream, an answer still invalid after the repair (maps to 502)."""


class TimedOut(HarmoniaError):
    """The answer did not come in time (a base for the kinds of time limits; maps to 504)."""

    code = "timeout"


class RetryableError(HarmoniaError):
    """A transient failure (a dependency hiccup). The job is retried with backoff."""

    code = "retryable"


class EngineUnavailable(HarmoniaError):
    """The engine cannot be built here (missing extra, voicebank or checkpoint). Not retried."""

    code = "engine_unavailable"


class JobStopped(HarmoniaError):
    """Raised inside a running job when it must stop at the engine's next check."""


class JobCanceled(JobStopped):
    code = "canceled"


class JobTimedOut(JobStopped, TimedOut):
    code = "timeout"
