"""Who may look at the dashboard and who may act through it: viewer and admin tokens.

A token is presented as `Authorization: Bearer <token>` (scripts, the JSON API) or as the
`zeroloop_token` cookie that `/login` sets (browsers). Viewing needs a viewer or admin
token; admin actions need an admin token; a worker token does neither. A server bound to
loopback whose store holds no usable token at all trusts this machine, as the worker API
does: every request then acts as a local admin. The quickstart's own server (loopback only,
`trust_machine`) trusts this machine whatever tokens exist, so creating the first token
for a remote dashboard or a worker does not lock a running quickstart out of its own
pages. Actions sent from another web site's page are refused whatever the token
(`same_site`).
"""

from __future__ import annotations

import urllib.parse
from typing import Annotated

from fastapi import Depends, Request

from zeroloop.control.tokens import Principal, Role, Tokens
from zeroloop.errors import Forbidden

COOKIE = "zeroloop_token"


def presented_token(request: Request) -> str | None:
    """The token a request carries: its Bearer header first, else the login cookie."""
    header = request.headers.get("authorization")
    if header and header.startswith("Bearer "):
        return header.removeprefix("Bearer ").strip() or None
    return request.cookies.get(COOKIE) or None


def principal(request: Request) -> Principal:
    """Who the request speaks for (AuthError when it carries no usable token and local trust does not apply)."""
    tokens: Tokens = request.app.state.tokens
    state = request.app.state
    return tokens.principal(presented_token(request), loopback=state.loopback, trust_machine=state.trust_machine)


def viewer(request: Request) -> Principal:
    """A principal that may read the dashboard: a viewer or admin token (Forbidden for a worker token)."""
    found = principal(request)
    if found.role not in (Role.VIEWER, Role.ADMIN):
        raise Forbidden(f"token {found.token_id} is a {found.role.value} token: the dashboard needs a viewer token")
    return found


def same_site(request: Request) -> None:
    """Refuse a request another web site made the browser send (Forbidden).

    A page elsewhere can make a browser POST to this server without reading the answer; on
    loopback without tokens nothing else would stop it. Browsers name the page's origin
    (`Origin`, `Sec-Fetch-Site`), so such a request is refused; scripts send neither.
    """
    origin = request.headers.get("origin")
    if origin is not None and urllib.parse.urlsplit(origin).netloc != request.headers.get("host"):
        raise Forbidden(f"refusing a request sent from another site ({origin}): act from this server's own pages")
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise Forbidden("refusing a request sent from another site: act from this server's own pages")


def admin(request: Request) -> Principal:
    """A principal that may act: an admin token (Forbidden for viewer and worker tokens, and cross-site requests)."""
    same_site(request)
    found = principal(request)
    if found.role is not Role.ADMIN:
        raise Forbidden(f"token {found.token_id} is a {found.role.value} token: this action needs an admin token")
    return found


Viewer = Annotated[Principal, Depends(viewer)]
Admin = Annotated[Principal, Depends(admin)]
