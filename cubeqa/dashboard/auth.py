"""Dashboard auth on the API's one check (cubeqa.api.deps.authorised: the bearer token or the login cookie; no
token configured, open): a page sends a visitor without either to the login form, which sets an HttpOnly,
SameSite=Strict cookie holding an HMAC of the token (never the token)."""

from __future__ import annotations

import hmac
from urllib.parse import quote

from fastapi import HTTPException, Request, Response, status

from cubeqa.api.deps import COOKIE, BearerDep, CookieDep, Services, ServicesDep, authorised, session_value

SESSION_DAYS = 7
LOGIN = "/dashboard/login"


def login_required(request: Request, services: ServicesDep, credentials: BearerDep, cookie: CookieDep) -> None:
    """Dependency of the HTML pages: the API's check, but a visitor it refuses is sent to the login form."""
    try:
        authorised(services, credentials, cookie)
    except HTTPException as refused:
        target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""), safe="")
        location = {"Location": f"{LOGIN}?next={target}"}
        raise HTTPException(status.HTTP_303_SEE_OTHER, "login required", headers=location) from refused


def token_matches(services: Services, given: str) -> bool:
    """Whether the login form's token is the configured one."""
    return services.token is not None and hmac.compare_digest(given.encode(), services.token)


def log_in(response: Response, token: bytes, secure: bool) -> None:
    """Sets the login cookie on `response`; only the dashboard's paths receive it."""
    response.set_cookie(
        COOKIE, session_value(token).decode(), max_age=SESSION_DAYS * 86400, httponly=True, samesite="strict",
        secure=secure, path="/dashboard",
    )


def log_out(response: Response) -> None:
    """Deletes the login cookie."""
    response.delete_cookie(COOKIE, path="/dashboard")


def safe_next(target: str | None) -> str:
    """Only a dashboard path is a place to return to after login (no open redirect)."""
    if target and target.startswith("/dashboard") and not target.startswith("//") and "\\" not in target:
        return target
    return "/dashboard"
