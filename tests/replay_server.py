"""A small local HTTP server that replays recorded-format API responses (offline tests).

Clients that must talk HTTP (mp-api's ``MPRester`` calls ``/heartbeat`` in its constructor and
pages ``/materials/summary/`` with ``_limit``/``_skip``) are pointed at
``ReplayServer.url`` instead of the real service. Nothing leaves ``127.0.0.1``.

Routes are a plain dict ``{path: handler}``; a handler takes a :class:`Request` and returns a
:class:`Reply` (or any JSON-serialisable object, sent with status 200). Paths are matched after
removing the trailing slash; a path may hold ``{name}`` placeholders (one path segment each),
whose values arrive in ``Request.path_params``. Unknown routes are answered ``404
{"detail": "Not Found"}`` (FastAPI's answer), logged at ERROR level and kept in
``server.unknown`` so a test can assert that no request fell through the table.

Another test adds routes like this::

    from replay_server import ReplayServer, Reply, mp_routes

    routes = mp_routes(summary_docs)                      # heartbeat + summary
    routes["/materials/tasks/{task_id}"] = lambda req: Reply(200, {...})
    with ReplayServer(routes) as server:
        MPRester(api_key, endpoint=server.url) ...
        assert not server.unknown

or ``server.add_route(path, handler)`` on a running server.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

log = logging.getLogger("replay_server")

FIXTURES_MP = Path(__file__).resolve().parent / "fixtures_mp"


@dataclass
class Request:
    """One request as the server saw it (kept in ``ReplayServer.requests``)."""

    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""
    path_params: dict[str, str] = field(default_factory=dict)


@dataclass
class Reply:
    """A response: JSON-serialisable ``body`` (or raw ``bytes``) with a status code."""

    status: int = 200
    body: Any = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Any]


def _norm(path: str) -> str:
    path = "/" + path.strip("/")
    return path


def _compile(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[A-Za-z_][A-Za-z0-9_]*\})", _norm(pattern))
    regex = "".join(
        f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{") and p.endswith("}") else re.escape(p) for p in parts
    )
    return re.compile(f"^{regex}$")


class ReplayServer:
    """Threaded HTTP server on ``127.0.0.1`` (free port) answering from a route table.

    Use as a context manager; ``url`` ends with ``/`` (mp-api joins suffixes onto it).
    """

    def __init__(self, routes: dict[str, Handler] | None = None) -> None:
        self.routes: dict[str, Handler] = {}
        self._compiled: dict[str, re.Pattern[str]] = {}
        for path, handler in (routes or {}).items():
            self.add_route(path, handler)
        self.requests: list[Request] = []
        self.unknown: list[Request] = []
        self.errors: list[tuple[Request, str]] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- routes
    def add_route(self, path: str, handler: Handler) -> None:
        """Add (or replace) the handler of ``path`` (placeholders ``{name}`` allowed)."""
        key = _norm(path)
        self.routes[key] = handler
        self._compiled[key] = _compile(key)

    def _match(self, path: str) -> tuple[Handler, dict[str, str]] | None:
        path = _norm(path)
        if path in self.routes:  # exact paths win over patterns
            return self.routes[path], {}
        for key, regex in self._compiled.items():
            m = regex.match(path)
            if m:
                return self.routes[key], m.groupdict()
        return None

    def requests_to(self, path: str) -> list[Request]:
        """Requests received for one route (normalised path, no placeholders)."""
        key = _norm(path)
        return [r for r in self.requests if _norm(r.path) == key]

    # ---------------------------------------------------------------- server
    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> "ReplayServer":
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                req = Request(
                    method=self.command,
                    path=parts.path,
                    params=dict(parse_qsl(parts.query, keep_blank_values=True)),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                with server._lock:
                    server.requests.append(req)
                found = server._match(parts.path)
                if found is None:
                    with server._lock:
                        server.unknown.append(req)
                    log.error("replay server: NO ROUTE for %s %s (params %s)", req.method, req.path, req.params)
                    reply = Reply(404, {"detail": "Not Found"})
                else:
                    handler, req.path_params = found
                    try:
                        out = handler(req)
                        reply = out if isinstance(out, Reply) else Reply(200, out)
                    except Exception as exc:  # a broken handler must show, not hang the client
                        log.exception("replay server: handler for %s failed", req.path)
                        with server._lock:
                            server.errors.append((req, f"{type(exc).__name__}: {exc}"))
                        reply = Reply(500, {"detail": f"replay handler error: {exc}"})
                if reply.status >= 400 and found is not None:
                    with server._lock:
                        server.errors.append((req, json.dumps(reply.body, default=str)))
                payload = (
                    reply.body
                    if isinstance(reply.body, bytes)
                    else json.dumps(reply.body, default=str).encode()
                )
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(payload)))
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_HEAD = do_PATCH = do_PUT = do_DELETE = _serve

            def log_message(self, fmt: str, *args: Any) -> None:  # route access logs to logging
                log.debug("replay server: " + fmt, *args)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="replay-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "ReplayServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# =============================================================================== Materials Project
def load_mp_fixture(name: str) -> Any:
    """Load ``tests/fixtures_mp/<name>`` (JSON)."""
    return json.loads((FIXTURES_MP / name).read_text())


def heartbeat_handler(heartbeat: dict[str, Any]) -> Handler:
    """``GET /heartbeat``: emmet-api's answer (status, time, version, db_version, batch ids...)."""

    def handle(req: Request) -> dict[str, Any]:
        return {**heartbeat, "time": datetime.now(timezone.utc).isoformat()}

    return handle


def _as_float(value: str, name: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"query parameter {name}={value!r} is not a number") from None


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _bool(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes")


#: Query parameters of ``/materials/summary/`` the replay handler understands, besides the
#: generic ``<numeric field>_min`` / ``<numeric field>_max`` range filters.
SUMMARY_PARAMS = {
    "_limit",
    "_skip",
    "_fields",
    "_all_fields",
    "_page",
    "_per_page",
    "material_ids",
    "elements",
    "exclude_elements",
    "chemsys",
    "formula",
    "deprecated",
    "batch_id_not_eq",
}


def summary_handler(docs: list[dict[str, Any]], max_limit: int = 1000) -> Handler:
    """``GET /materials/summary/`` over recorded SummaryDoc JSON documents.

    Implements the API's paging (``_limit``, ``_skip``; ``meta.total_doc`` = matching documents),
    projection (``_fields`` / ``_all_fields``) and the filters listed in :data:`SUMMARY_PARAMS`
    plus ``X_min``/``X_max`` on numeric fields. Any other parameter is answered ``400`` (and
    logged) so a criterion that a client sends but the replay cannot honour is never ignored.
    """
    numeric = {k for d in docs for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    def handle(req: Request) -> Reply:
        p = req.params
        unknown = []
        for name in p:
            if name in SUMMARY_PARAMS:
                continue
            base = re.sub(r"_(min|max)$", "", name)
            if base != name and base in numeric:
                continue
            unknown.append(name)
        if unknown:
            log.error("replay summary: unsupported query parameter(s) %s", unknown)
            return Reply(400, {"detail": f"replay server does not support parameter(s) {unknown}"})
        try:
            selected = list(docs)
            if "material_ids" in p:
                wanted = set(_csv(p["material_ids"]))
                selected = [d for d in selected if d["material_id"] in wanted]
            if "elements" in p:
                need = set(_csv(p["elements"]))
                selected = [d for d in selected if need <= set(d["elements"])]
            if "exclude_elements" in p:
                bad = set(_csv(p["exclude_elements"]))
                selected = [d for d in selected if not bad & set(d["elements"])]
            if "chemsys" in p:
                systems = {"-".join(sorted(s.split("-"))) for s in _csv(p["chemsys"])}
                selected = [d for d in selected if d["chemsys"] in systems]
            if "formula" in p:
                formulas = set(_csv(p["formula"]))
                selected = [d for d in selected if d["formula_pretty"] in formulas]
            if "deprecated" in p:
                want = _bool(p["deprecated"])
                selected = [d for d in selected if bool(d.get("deprecated", False)) == want]
            if "batch_id_not_eq" in p:
                selected = [d for d in selected if d.get("batch_id") != p["batch_id_not_eq"]]
            for name, value in p.items():
                m = re.fullmatch(r"(.+)_(min|max)", name)
                if not m or m.group(1) not in numeric:
                    continue
                key, bound = m.group(1), _as_float(value, name)
                if m.group(2) == "min":
                    selected = [d for d in selected if d.get(key) is not None and d[key] >= bound]
                else:
                    selected = [d for d in selected if d.get(key) is not None and d[key] <= bound]
            limit = int(p.get("_limit", 100))
            if limit > max_limit:
                return Reply(400, {"detail": f"_limit {limit} above max_limit {max_limit}"})
            skip = int(p.get("_skip", 0))
            if "_page" in p:
                skip = (int(p["_page"]) - 1) * int(p.get("_per_page") or limit)
        except ValueError as exc:
            return Reply(400, {"detail": str(exc)})
        page = selected[skip : skip + limit]
        if "_fields" in p and not _bool(p.get("_all_fields", "false")):
            fields = _csv(p["_fields"])
            page = [{k: d[k] for k in fields if k in d} for d in page]
        meta = {
            "api_version": "replay",
            "time_stamp": datetime.now(timezone.utc).isoformat(),
            "total_doc": len(selected),
            "max_limit": max_limit,
            "facet": None,
        }
        return Reply(200, {"data": page, "errors": [], "meta": meta})

    return handle


def mp_routes(
    docs: list[dict[str, Any]] | None = None, heartbeat: dict[str, Any] | None = None
) -> dict[str, Handler]:
    """The routes mp-api's ``MPRester`` needs to build and to run ``materials.summary.search``.

    Defaults to the recorded fixtures ``tests/fixtures_mp/summary_docs.json`` and
    ``heartbeat.json``. Returns a fresh dict: add routes to it before starting the server.
    """
    docs = load_mp_fixture("summary_docs.json") if docs is None else docs
    heartbeat = load_mp_fixture("heartbeat.json") if heartbeat is None else heartbeat
    return {
        "/heartbeat": heartbeat_handler(heartbeat),
        "/materials/summary": summary_handler(docs),
    }
