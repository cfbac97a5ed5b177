"""The review pages: grid, one image, prompts; and the one endpoint every review action posts to.

Pages are read-only unless the server was started with ``promptmill browse
--review`` (environment ``PROMPTMILL_REVIEW=1``). Even then a write is
accepted only when all of these hold, because Datasette's own CSRF check lets
requests without cookies through, and any page the user visits can post to
127.0.0.1:

- the client is this machine (a loopback address) and the Host header names it
  (no DNS rebinding);
- the Origin header, when the browser sends one, is this server, and the
  browser does not say the request is cross-site (Sec-Fetch-Site);
- the request carries the session cookie (HttpOnly, SameSite=Strict) and, in a
  header, the session's token, which only this server's own pages contain, so
  a page of another site can neither read nor guess it.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import weakref
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from datasette.utils.asgi import Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from promptmill.core.errors import BadInput
from promptmill.core.store import Store
from promptmill.datasette import actions, queries

HERE = Path(__file__).parent
STATIC = {"review.js": "text/javascript", "review.css": "text/css"}
COOKIE = "promptmill-review"
TOKEN_HEADER = "x-review-token"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]"}
MAX_BODY = 1 << 20
TEMPLATES = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def review_enabled() -> bool:
    return os.environ.get("PROMPTMILL_REVIEW") == "1"


def is_local(request) -> bool:
    """The request comes from this machine."""
    client = request.scope.get("client") or ("",)
    return client[0] == "::1" or client[0].startswith("127.")


def same_site(request) -> bool:
    """Host names this machine and the browser says the request comes from this server's own page."""
    host = request.headers.get("host", "")
    hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    if hostname not in LOOPBACK_HOSTS:
        return False
    origin = request.headers.get("origin")
    if origin is not None and origin != f"http://{host}":
        return False
    return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")


def _sessions(datasette) -> dict:
    return SESSIONS.setdefault(datasette, {})


def session_token(datasette, session_id: str) -> str:
    return datasette.sign(session_id, "promptmill-review-token")


def current_session(datasette, request) -> actions.Session | None:
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        return None
    try:
        session_id = datasette.unsign(cookie, "promptmill-review")
    except Exception:  # noqa: BLE001 - a forged or stale cookie is no session
        return None
    return _sessions(datasette).get(session_id)


def write_refusal(datasette, request) -> str | None:
    """Why this request may not write, or None."""
    if not review_enabled():
        return "review is off: start the server with promptmill browse --review"
    if not is_local(request):
        return "review writes are only for this machine"
    if not same_site(request):
        return "cross-site request refused"
    session = current_session(datasette, request)
    if session is None:
        return "no review session: open the review page first"
    token = request.headers.get(TOKEN_HEADER, "")
    if not hmac.compare_digest(token, session_token(datasette, session.id)):
        return "missing or wrong review token"
    return None


def review_database(datasette, request):
    from promptmill.datasette.plugin import promptmill_databases

    names = promptmill_databases(datasette)
    name = request.args.get("db") or (names[0] if names else None)
    if name not in names:
        return None
    return datasette.get_database(name)


def _page(datasette, request, template: str, context: dict) -> Response:
    """Render a page; a writable one gets (and sets) its session and token."""
    writable = review_enabled() and is_local(request)
    session = current_session(datasette, request) if writable else None
    new_cookie = None
    if writable and session is None:
        session = actions.Session(secrets.token_urlsafe(24))
        _sessions(datasette)[session.id] = session
        new_cookie = datasette.sign(session.id, "promptmill-review")
    html = TEMPLATES.get_template(template).render(
        **context, writable=writable, token=session_token(datasette, session.id) if session else "",
        base=datasette.urls.path("/-/review"), static=datasette.urls.path("/-/review/static"),
        thumb=datasette.urls.path("/-/promptmill/thumb"), full=datasette.urls.path("/-/promptmill/image"))
    response = Response.html(html)
    if new_cookie:
        response.set_cookie(COOKIE, new_cookie, httponly=True, samesite="strict", path="/")
    response.headers["x-frame-options"] = "DENY"
    response.headers["content-security-policy"] = "default-src 'self'; img-src 'self'; frame-ancestors 'none'"
    return response


async def grid_view(request, datasette):
    database = review_database(datasette, request)
    if database is None:
        return Response.text("no promptmill database attached", status=404)
    query = queries.GridQuery.from_args(request.args)
    after = request.args.get("after", "")

    def read(conn):
        return queries.grid_page(conn, query, after), queries.filter_choices(conn)

    page, choices = await database.execute_fn(read)
    return _page(datasette, request, "grid.html", {
        "db": database.name, "query": query, "page": page, "choices": choices, "states": queries.STATES,
        "sorts": queries.SORTS, "sizes": queries.PAGE_SIZES, "lineage": datasette.urls.database(database.name),
        "next_url": f"?{urlencode(query.args() | {'db': database.name, 'after': page['next']})}" if page["next"]
        else "", "filter_qs": urlencode(query.args() | {"db": database.name})})


async def image_page_view(request, datasette):
    database = review_database(datasette, request)
    if database is None:
        return Response.text("no promptmill database attached", status=404)
    try:
        image_id = int(request.url_vars["image_id"])
    except ValueError:
        return Response.text("no such image", status=404)
    detail = await database.execute_fn(lambda conn: queries.image_detail(conn, image_id))
    if detail is None:
        return Response.text("no such image", status=404)
    kind = request.args.get("kind", "")
    return _page(datasette, request, "image.html", {
        "db": database.name, "d": detail, "kind": kind, "lineage": datasette.urls.database(database.name)})


async def prompts_view(request, datasette):
    database = review_database(datasette, request)
    if database is None:
        return Response.text("no promptmill database attached", status=404)
    state = request.args.get("state", "")
    q = request.args.get("q", "")
    try:
        after = int(request.args.get("after") or 0)
    except ValueError:
        after = 0
    page = await database.execute_fn(lambda conn: queries.prompt_page(conn, state, q, after))
    args = {key: value for key, value in (("db", database.name), ("state", state), ("q", q)) if value}
    return _page(datasette, request, "prompts.html", {
        "db": database.name, "page": page, "state": state, "q": q, "states": queries.STATES,
        "lineage": datasette.urls.database(database.name),
        "next_url": f"?{urlencode(args | {'after': page['next']})}" if page["next"] else ""})


async def static_view(request, datasette):
    name = request.url_vars["name"]
    if name not in STATIC:
        return Response.text("not found", status=404)
    return Response((HERE / "static" / name).read_bytes(), content_type=STATIC[name],
                    headers={"cache-control": "no-cache", "x-content-type-options": "nosniff"})


async def action_view(request, datasette):
    """Apply one review action (JSON body) and answer with the redrawn tiles."""
    if request.method != "POST":
        return Response.json({"error": "POST only"}, status=405)
    refusal = write_refusal(datasette, request)
    if refusal:
        return Response.json({"error": refusal}, status=403)
    database = review_database(datasette, request)
    if database is None:
        return Response.json({"error": "no promptmill database attached"}, status=404)
    body = await request.post_body()
    if len(body) > MAX_BODY:
        return Response.json({"error": "request too large"}, status=413)
    try:
        payload = json.loads(body or b"{}")
        if not isinstance(payload, dict):
            raise ValueError("expected a JSON object")
    except ValueError as exc:
        return Response.json({"error": f"bad JSON: {exc}"}, status=400)
    session = current_session(datasette, request)
    try:
        ids = await _target_ids(database, payload)
        result = await database.execute_write_fn(lambda conn: _apply(Store(database.path, conn), session, payload,
                                                                     ids))
    except BadInput as exc:
        return Response.json({"error": str(exc)}, status=400)
    kind = str(payload.get("kind") or "")
    if result["item_type"] == "image" and len(result["ids"]) <= queries.PAGE_SIZES[-1]:
        result["tiles"] = await database.execute_fn(lambda conn: queries.tiles(conn, result["ids"], kind))
    result["open_actions"] = len(session.open_actions())
    return Response.json(result, default=str)


async def _target_ids(database, payload: dict) -> list[int]:
    """The ids an action is for: those listed, or every image the given filter matches."""
    if payload.get("filter") is not None:
        if payload.get("item_type", "image") != "image":
            raise BadInput("a filter selects images; list the prompts by id")
        query = queries.GridQuery.from_args(dict(parse_qsl(str(payload["filter"]))))
        return await database.execute_fn(lambda conn: queries.matching_ids(conn, query))
    ids = payload.get("ids") or []
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise BadInput("ids must be a list of integers")
    return ids


def _apply(store: Store, session: actions.Session, payload: dict, ids: list[int]) -> dict:
    store.execute("PRAGMA busy_timeout = 60000")  # steps may be writing to the same database
    name = payload.get("action")
    if name in ("keep", "drop"):
        return actions.decide(store, session, str(payload.get("item_type", "image")), ids, name,
                              str(payload.get("reason") or ""))
    if name in actions.CAPTION_ACTIONS:
        tags = payload.get("tags") or []
        if isinstance(tags, str):
            tags = tags.split(",")
        return actions.edit_captions(store, session, name, ids, kind=str(payload.get("kind") or ""),
                                     text=str(payload.get("text") or ""), tags=tuple(map(str, tags)),
                                     old=str(payload.get("old") or ""), new=str(payload.get("new") or ""))
    if name == "undo":
        return actions.undo(store, session, "session" if payload.get("which") == "session" else "last")
    raise BadInput(f"unknown action {name!r}")


ROUTES = [
    (r"^/-/review$", grid_view),
    (r"^/-/review/image/(?P<image_id>[0-9]+)$", image_page_view),
    (r"^/-/review/prompts$", prompts_view),
    (r"^/-/review/static/(?P<name>[a-z.]+)$", static_view),
    (r"^/-/review/action$", action_view),
]
