"""What every dashboard page and form shares: who is looking (a login session, or off to the
login form), rendering a template with the session's CSRF token, and answering a form."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from freight.api.deps import Runtime, RuntimeDep, dashboard_principal
from freight.dashboard import session as login
from freight.dashboard.views import STATUS_WORDS
from freight.errors import Unauthorized
from freight.service.keys import Principal, Scope

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.globals["status_words"] = STATUS_WORDS


class LoginRequired(Exception):
    """No (valid) session: the page sends the browser to the login form, and back after."""


def viewer(request: Request, rt: RuntimeDep) -> Principal:
    try:
        who = dashboard_principal(request, rt)
    except Unauthorized:
        raise LoginRequired from None
    if not who.allows(Scope.READ):  # an agent's key: it may not log in either
        raise LoginRequired
    return who


Viewer = Annotated[Principal, Depends(viewer)]


def page(
    request: Request, rt: Runtime, name: str, who: Principal | None, **context: Any
) -> Response:
    cookie = request.cookies.get(login.COOKIE)
    return templates.TemplateResponse(
        request,
        name,
        {
            "who": who,
            "csrf": login.csrf_token(rt.session_secret, cookie) if cookie else "",
            "error": request.query_params.get("error"),
            "notice": request.query_params.get("notice"),
            "prefect_url": rt.settings.prefect_api_url.removesuffix("/api"),
            **context,
        },
    )


def back(path: str, **message: str) -> RedirectResponse:
    query = f"?{urlencode(message)}" if message else ""
    return RedirectResponse(path + query, status_code=303)


def checked(request: Request, rt: Runtime, token: str) -> None:
    if not login.csrf_ok(rt.session_secret, request.cookies.get(login.COOKIE), token):
        raise Unauthorized("The form is stale or not ours (CSRF check failed); reload the page")


def safe_next(path: str | None) -> str:
    """Where to go after logging in: a path of this site only (never `//elsewhere`)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


async def login_redirect(request: Request, exc: Exception) -> Response:
    asked = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    # A page's own fetches and streams come back to the page, not to themselves.
    own = request.url.path.startswith(("/partials/", "/events"))
    return back("/login", **({} if own or asked == "/" else {"next": asked}))


def app_path(app: str) -> str:
    return f"/apps/{quote(app)}"
