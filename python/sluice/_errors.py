"""The exceptions of sluice (the hierarchy is in the package docstring).

Pure Python so that the C extension (_sluice.c) and the Python layers raise
the same classes; the extension looks Error and ArgumentError up at import.
"""
import builtins


class Error(Exception):
    """Every error sluice raises. `code` is the library's negative code where one applies
    (sl_client_strerror names it), else None."""

    def __init__(self, *args, code=None):
        # The extension raises Error((code, text)) for a library code.
        if len(args) == 2 and isinstance(args[0], int) and code is None:
            code, args = args[0], (args[1],)
        super().__init__(*args)
        self.code = code


class ArgumentError(Error, ValueError):
    """A bad argument: lengths that differ, a value that does not fit its type (an id outside
    0 .. 2**32 - 1), a bad target or option. Nothing was sent."""


class Timeout(Error, builtins.TimeoutError):
    """A wait ran out: flush() before every batch was acknowledged, or send() before there was
    room. `counts` is the report at that moment (pending says how many batches wait),
    `last_error` the library's text for why it is still waiting (e.g. "Connection refused"),
    `taken` how many readings of the send() were taken (send only)."""

    def __init__(self, message, counts=None, last_error=None, taken=None, code=None):
        super().__init__(message, code=code)
        self.counts = counts
        self.last_error = last_error
        self.taken = taken


class RefusedError(Error):
    """The gateway answered BAD_CRC, MALFORMED or UNAUTHORIZED: a bug or a key problem that
    resending cannot help, so the client stopped. `status` is the status name, `batch_seq` the
    batch (None when the library did not say which), `counts` the report."""

    def __init__(self, message, status=None, batch_seq=None, counts=None, code=None):
        super().__init__(message, code=code)
        self.status = status
        self.batch_seq = batch_seq
        self.counts = counts


class HTTPError(Error):
    """The gateway answered an HTTP request with an error status. `status` is the HTTP status,
    `error` the gateway's "error" text (or the body), `url` the path asked for."""

    def __init__(self, status, error, url):
        super().__init__("HTTP %d for %s: %s" % (status, url, error))
        self.status = status
        self.error = error
        self.url = url
        self.retry_after = None  # the Retry-After header of a 503, if any
        self.accepted = None     # Query.write: the X-Sluice-Accepted/-Rejected headers of the
        self.rejected = None     # answer, if any (a 400 partial write stored `accepted` readings)


class UnknownSeries(HTTPError, LookupError):
    """The gateway knows no series of this canonical name (404 "unknown series" from
    GET /api/v1/series?name=): `name` is the name asked for; `status`, `error` and `url` as
    HTTPError's, so code that catches HTTPError for an unknown sensor id catches this too."""

    def __init__(self, name, url, error="unknown series"):
        Error.__init__(self, "unknown series %r (HTTP 404 for %s)" % (name, url))
        self.name = name
        self.status = 404
        self.error = error
        self.url = url
        self.retry_after = None
        self.accepted = None
        self.rejected = None


class GatewayError(Error):
    """A sluiced that Gateway started could not be found, did not start in time, or exited
    early. `returncode` is its exit code (None while running), `stderr` its last lines."""

    def __init__(self, message, returncode=None, stderr=""):
        super().__init__(message + (("\n" + stderr) if stderr else ""))
        self.returncode = returncode
        self.stderr = stderr
