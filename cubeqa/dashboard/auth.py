"""Dashboard auth: with CUBEQA_API_TOKEN set, a login form sets an HttpOnly, SameSite=Strict cookie holding an
HMAC of the token (never the token); `Authorization: Bearer <token>` works too. Without a token it is open."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote

from fastapi import HTTPException, Request, status

COOKIE = "cubeqa_dashboard"
SESSION_DAYS = 7


class DashboardAuth:
    """Checks requests against the API token (None: everything is allowed)."""

    def __init__(self, token: bytes | None) -> None:
        self.token = token
        # A value derived from the token: stealing the cookie does not reveal the API token.
        self.cookie_value = hmac.new(token, b"cubeqa-dashboard-session", hashlib.sha256).hexdigest() if token else ""

    @property
    def enabled(self) -> bool:
        return self.token is not None

    def token_matches(self, given: str) -> bool:
        return self.token is not None and hmac.compare_digest(given.encode(), self.token)

    def allowed(self, request: Request) -> bool:
        if self.token is None:
            return True
        cookie = request.cookies.get(COOKIE, "")
        if cookie and hmac.compare_digest(cookie.encode(), self.cookie_value.encode()):
            return True
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.token_matches(credentials.strip())

    def page(self, request: Request) -> None:
        """Dependency of HTML pages: a visitor without the token is sent to the login form."""
        if not self.allowed(request):
            target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""), safe="")
            raise HTTPException(status.HTTP_303_SEE_OTHER, "login required", headers={"Location": f"/dashboard/login?next={target}"})

    def data(self, request: Request) -> None:
        """Dependency of the JSON endpoints the pages poll."""
        if not self.allowed(request):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or invalid token", headers={"WWW-Authenticate": "Bearer"})


def safe_next(target: str | None) -> str:
    """Only a dashboard path is a place to return to after login (no open redirect)."""
    if target and target.startswith("/dashboard") and not target.startswith("//") and "\\" not in target:
        return target
    return "/dashboard"
