"""OpenAI-style error objects: every failure a client sees is `{"error": {message, type, param, code}}`.

Routes raise `ApiError`; the handlers here turn it, request validation errors (bad JSON, wrong fields),
unknown routes and our typed errors (`bayling_local.errors`) into that object with the right status.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from bayling_local.errors import BaylingError, ContextOverflowError, UsageError

INVALID = "invalid_request_error"


class ApiError(Exception):
    """A request the server refuses, with its HTTP status and OpenAI error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = INVALID,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def unknown_model(name: str, served: str) -> ApiError:
    return ApiError(
        404, f"the model '{name}' does not exist; this server serves '{served}'", param="model", code="model_not_found"
    )


def from_bayling_error(error: BaylingError) -> ApiError:
    """Our typed errors as the statuses a client expects: too long 413, bad input 400, else 500."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, ContextOverflowError):
        return ApiError(413, message, param="messages", code="context_length_exceeded")
    if isinstance(error, UsageError):
        return ApiError(400, message)
    return ApiError(500, message, type="server_error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, lambda request, error: error.response())
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(BaylingError, lambda request, error: from_bayling_error(error).response())
    app.add_exception_handler(Exception, _unexpected)


def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    first = error.errors()[0] if error.errors() else {}
    where = [str(part) for part in first.get("loc", ()) if part != "body"]
    if first.get("type") == "json_invalid":
        return ApiError(400, f"the body is not valid JSON: {first.get('msg', '')}", code="invalid_json").response()
    param = ".".join(where) or None
    message = f"{param}: {first.get('msg', 'invalid value')}" if param else first.get("msg", "invalid request body")
    return ApiError(400, message, param=param).response()


def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    kind = INVALID if error.status_code < 500 else "server_error"
    detail = error.detail if isinstance(error.detail, str) else "request refused"
    if error.status_code == 404:
        detail = f"no route {request.method} {request.url.path}"
    return ApiError(error.status_code, detail, type=kind).response()


def _unexpected(request: Request, error: Exception) -> JSONResponse:
    return ApiError(500, f"unexpected {type(error).__name__}: {error}", type="server_error").response()
