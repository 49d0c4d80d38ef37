"""Who may look at the dashboard and who may act through it: viewer and admin tokens.

A token is presented as `Authorization: Bearer <token>` (scripts, the JSON API) or as the
`zeroloop_token` cookie that `/login` sets (browsers). Viewing needs a viewer or admin
token; admin actions need an admin token; a worker token does neither. A server bound to
loopback whose store holds no usable token at all trusts this machine, as the worker API
does: every request then acts as a local admin.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from zeroloop.errors import Forbidden
from zeroloop.server.tokens import Principal, Role, Tokens

COOKIE = "zeroloop_token"
LOCAL = Principal("local", Role.ADMIN, None)


def presented_token(request: Request) -> str | None:
    """The token a request carries: its Bearer header first, else the login cookie."""
    header = request.headers.get("authorization")
    if header and header.startswith("Bearer "):
        return header.removeprefix("Bearer ").strip() or None
    return request.cookies.get(COOKIE) or None


def principal(request: Request) -> Principal:
    """Who the request speaks for (AuthError when it carries no usable token and local trust does not apply)."""
    tokens: Tokens = request.app.state.tokens
    presented = presented_token(request)
    if not presented and request.app.state.loopback and not tokens.any_usable():
        return LOCAL  # loopback with no tokens at all: the local trust
    return tokens.check(presented)


def viewer(request: Request) -> Principal:
    """A principal that may read the dashboard: a viewer or admin token (Forbidden for a worker token)."""
    found = principal(request)
    if found.role not in (Role.VIEWER, Role.ADMIN):
        raise Forbidden(f"token {found.token_id} is a {found.role.value} token: the dashboard needs a viewer token")
    return found


def admin(request: Request) -> Principal:
    """A principal that may act: an admin token (Forbidden for viewer and worker tokens)."""
    found = principal(request)
    if found.role is not Role.ADMIN:
        raise Forbidden(f"token {found.token_id} is a {found.role.value} token: this action needs an admin token")
    return found


Viewer = Annotated[Principal, Depends(viewer)]
Admin = Annotated[Principal, Depends(admin)]
