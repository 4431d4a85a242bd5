"""Errors with TF Serving's status codes, and their HTTP and gRPC forms.

Both front ends raise `ServingError(code, message)`; REST answers
`{"error": message}` with TF Serving's HTTP mapping of the code, gRPC aborts
with the code itself.
"""
from __future__ import annotations

import grpc

# TF Serving's status -> HTTP mapping (tensorflow_serving/model_servers/http_rest_api_handler).
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


class ServingError(Exception):
    """A request failure with a gRPC status code (`code`) and a message.

    `http_status` overrides the HTTP mapping where HTTP has a better code
    (413 for an oversized body)."""

    def __init__(self, code: grpc.StatusCode, message: str, http_status: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status or HTTP_STATUS.get(code, 500)

    @property
    def code_name(self) -> str:
        """"INVALID_ARGUMENT" etc., as in TF Serving's status protos."""
        return self.code.name

    def __repr__(self) -> str:
        return f"ServingError({self.code_name}, {self.message!r})"


def invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def failed_precondition(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.FAILED_PRECONDITION, message)


def from_tf_error(err: Exception) -> ServingError:
    """Maps an exception from running a model to a `ServingError`."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    if isinstance(err, ServingError):
        return err
    if isinstance(err, tf.errors.OpError):  # TF's error codes are gRPC's
        return ServingError(_CODE_BY_VALUE.get(err.error_code, grpc.StatusCode.INTERNAL), err.message)
    if isinstance(err, (ValueError, TypeError)):
        return invalid(str(err))
    return ServingError(grpc.StatusCode.INTERNAL, f"{type(err).__name__}: {err}")


_CODE_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}
