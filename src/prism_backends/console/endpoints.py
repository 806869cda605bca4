"""The console's routes: its static files at ``{base}/ui/``, a redirect from
``/``, and the sign-in link's exchange."""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from prism_backends.auth.keys import load_or_create_issuer_key
from prism_backends.auth.permissions import Role
from prism_backends.auth.tokens import issue_token
from prism_backends.errors import AppError, Forbidden
from prism_backends.http.deps import RuntimeDep
from prism_backends.http.responses import error_responses

# What a console session may last: a working day, within token_max_days.
CONSOLE_TOKEN_TTL = timedelta(hours=12)

# The console loads nothing from elsewhere; a stricter policy than any page needs
# costs nothing and keeps an injected script from reaching out.
_SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}
_ENCODED_HEADERS = [(name.encode(), value.encode()) for name, value in _SECURITY_HEADERS.items()]


class InvalidSignInCode(AppError):
    status_code = 401
    code = "invalid_code"


class SignInRequest(BaseModel):
    code: str = Field(max_length=256, description="The code from the link `serve` printed.")


class SignInToken(BaseModel):
    access_token: str
    domain_id: str
    expires_in: int = Field(description="Seconds.")


def static_dir() -> Path:
    return Path(str(files("prism_backends.console") / "static"))


class _ConsoleFiles(StaticFiles):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_ENCODED_HEADERS]
            await send(message)

        await super().__call__(scope, receive, send_with_headers)


router = APIRouter(tags=["console"])


@router.post(
    "/ui/sign-in",
    response_model=SignInToken,
    summary="Trade the one-time code of serve's sign-in link for a token (loopback only)",
    responses=error_responses(400, 401, 403, 429),
)
async def sign_in(request: Request, runtime: RuntimeDep, body: SignInRequest) -> SignInToken:
    client = request.client.host if request.client else ""
    if not _is_loopback(client):
        raise Forbidden("the sign-in link works only from this machine")
    if not runtime.sign_in_codes.redeem(body.code):
        raise InvalidSignInCode("this sign-in link is unknown, used or expired")
    settings = runtime.settings
    ttl = min(CONSOLE_TOKEN_TTL, timedelta(days=settings.token_max_days))
    token = issue_token(
        load_or_create_issuer_key(settings.data_dir),
        issuer=settings.jwt_issuer,
        domain_id=settings.sign_in_domain,
        role=Role.ADMIN,
        subject="console",
        ttl=ttl,
        audience=settings.jwt_audience,
    )
    return SignInToken(
        access_token=token,
        domain_id=settings.sign_in_domain,
        expires_in=int(ttl.total_seconds()),
    )


def install_console(app: FastAPI, base: str) -> None:
    app.include_router(router, prefix=base)
    ui = f"{base}/ui"

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse(f"{ui}/", status_code=307)

    @app.get(f"{ui}/sign-in", include_in_schema=False)
    async def sign_in_is_post_only() -> None:
        # Otherwise the static files below would answer a GET here with a 404.
        raise StarletteHTTPException(405)

    @app.get(ui, include_in_schema=False)
    async def ui_without_slash() -> RedirectResponse:
        return RedirectResponse(f"{ui}/", status_code=307)

    app.mount(f"{ui}/", _ConsoleFiles(directory=static_dir(), html=True), name="console")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
