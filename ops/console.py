"""`lighter-hedge console`: the operator's web page on 127.0.0.1 (aiohttp), the I/O around ops/console_view.py.

It calls what the CLI calls, never a second path:

  the view    ops.status.collect (as `status`), with hedge.b's length and consumer from ops.alerter
  Requeue     ops.requeue.preview, then ops.requeue.requeue (as `requeue`)
  Resume      ops.resume.resume (as `resume`; refused while a hedge of the market has failed)
  Flatten     ops.flatten.flatten (as `flatten`), asking ops.flatten.confirm_question first

Every request needs Flower's basic auth and a Host naming this loopback console; every POST also
the page's own header and a same-origin Origin (ops.console_view.post_refusal). It holds the task
signing key (requeues and flatten requests to the maker and the worker are signed), no account key.

The venue is read (A's and B's positions, counted as READ of process `cli` in the request budget)
at most every ops.console_view.venue_refresh_s, and at once after each action; Redis every refresh.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import redis
from aiohttp import web

from hedge.config import Config, ConfigError
from ops import console_view as cv
from ops.settings import KEYS_FILE_ENV, PROJECT_ROOT, redis_error_line
from ops.status import STATUS_BUDGET_WAIT_MS, VenueCache, collect, inflight_ages
from tasks.store import Store

log = logging.getLogger("ops.console")

STATIC = Path(__file__).resolve().parent / "console_static"
PAGES = {"/": ("index.html", "text/html"), "/console.js": ("console.js", "text/javascript"),
         "/console.css": ("console.css", "text/css")}
VIEW_MIN_INTERVAL_S = 0.5      # browsers polling every second share one view
CONSUMER_INSPECT_S = 5.0       # Celery's inspect of hedge.b's consumers, from a thread
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                                "img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str

    def __repr__(self) -> str:   # never the password
        return f"Credentials(user={self.user!r})"


def credentials(cfg: Config) -> Credentials:
    """Flower's basic auth: the console's secrets file (`up` writes it), else the same source as
    Flower's ($LH_FLOWER_USER / $LH_FLOWER_PASSWORD, or run/flower-password)."""
    from ops.supervise import CONSOLE_PASSWORD_FIELD, CONSOLE_USER_FIELD, flower_password, flower_user
    from venue.keys import read_key_file
    stored = read_key_file(cfg.keys_file) if os.environ.get(KEYS_FILE_ENV) and cfg.keys_file else {}
    user, password = stored.get(CONSOLE_USER_FIELD), stored.get(CONSOLE_PASSWORD_FIELD)
    if isinstance(user, str) and user and isinstance(password, str) and password:
        return Credentials(user, password)
    run_dir = Path(os.environ.get("LH_RUN_DIR", PROJECT_ROOT / "run"))
    return Credentials(flower_user(), flower_password(run_dir))


class ActionError(Exception):
    """An action refused or failed; str() is the one line the page shows. `status`: the HTTP status."""

    def __init__(self, message: str, status: int = 409):
        super().__init__(message)
        self.status = status


class Console:
    """The state the handlers share: the config, Redis, the venue cache, the consumer probe."""

    def __init__(self, cfg: Config, store: Store, markets: list[str], creds: Credentials, probe: Any = None):
        from venue.budget import budget_from_config
        self.cfg, self.store, self.markets, self.creds, self.probe = cfg, store, markets, creds, probe
        self.budget = budget_from_config(cfg, store.r)
        self.venue_every_s = cv.venue_refresh_s(cfg.rate_limit)
        self.cache = VenueCache(max_age_s=self.venue_every_s)
        self._view: tuple[float, dict[str, Any]] | None = None
        self._view_lock = asyncio.Lock()
        self._busy: dict[str, str] = {}   # market -> the action running on it
        self._attempts: dict[tuple[str, Any], int | None] = {}

    # ---- the view ------------------------------------------------------------------------------

    async def view(self) -> dict[str, Any]:
        async with self._view_lock:
            if self._view is not None and time.monotonic() - self._view[0] < VIEW_MIN_INTERVAL_S:
                return self._view[1]
            from ops.alerter import queue_length
            from ops.flatten import confirm_question
            rows = await collect(self.cfg, self.store, self.markets, self.budget, STATUS_BUDGET_WAIT_MS, self.cache)
            default_bps = self.cfg.strategy.max_slippage_bps
            markets = []
            for row in rows:
                symbol = row["market"]
                ages = inflight_ages(self.store, symbol, self.store.inflight(symbol))
                attempts = {task_id: self._attempts_of(task_id, info)
                            for task_id, info in (row.get("failed_hedges") or {}).items()}
                markets.append(cv.market_view(row, ages, attempts, confirm_question(self.cfg, [symbol]), default_bps))
            try:
                length: int | None = queue_length(self.store.r)
            except redis.RedisError:
                length = None
            view = cv.page_view(rows, markets, mode=self.cfg.mode, queue_length=length,
                                consumer_listed=getattr(self.probe, "listed", None),
                                venue_read_at=self.cache.read_at, venue_every_s=self.venue_every_s, now=time.time())
            self._view = (time.monotonic(), view)
            return view

    def _attempts_of(self, task_id: str, info: dict[str, Any]) -> int | None:
        """From the failed task's Celery result; read once per failure (its record's timestamp)."""
        key = (task_id, info.get("ts_ms"))
        if key not in self._attempts:
            from tasks import app
            try:
                meta = app.backend.get_task_meta(task_id)
            except Exception as exc:   # the result backend away: the row shows "?"
                log.warning("event=console.attempts_unreadable task_id=%s error=%s", task_id, type(exc).__name__)
                return None
            self._attempts[key] = cv.attempts_from_meta(meta)
        return self._attempts[key]

    def changed(self) -> None:
        """After an action: the next view reads Redis and the venue again."""
        self._view = None
        self.cache.expire()

    # ---- actions: the CLI's functions ----------------------------------------------------------------

    async def exclusive(self, market: str, action: str, run: Callable[[], Awaitable[dict[str, Any]]]) -> dict:
        if market in self._busy:
            raise ActionError(f"{self._busy[market]} of {market} is still running; wait for it")
        self._busy[market] = action
        try:
            return await run()
        finally:
            del self._busy[market]
            self.changed()

    async def preview(self, market: str, task_id: str, bps: int | None) -> dict[str, Any]:
        from ops.requeue import RequeueError, preview
        self._failed_of(market, task_id)
        try:
            result = await preview(self.cfg, self.store, task_id, bps)
        except RequeueError as exc:
            raise ActionError(str(exc), 400 if exc.exit_code == 2 else 409) from None
        view = cv.preview_view(result)
        log.info("event=console.preview market=%s task_id=%s max_slippage_bps=%s from=%s book_price=%s worst_price=%s "
                 "distance_bps=%s", market, task_id, view["max_slippage_bps"], view["from"], view["book_price"],
                 view["worst_price"], view["distance_bps"])
        return view

    async def requeue(self, market: str, task_id: str, bps: int | None) -> dict[str, Any]:
        from ops.requeue import RequeueError, requeue_hedges
        self._failed_of(market, task_id)

        async def run() -> dict[str, Any]:
            lines: list[str] = []   # each hedge's price line (with a bound), as the CLI echoes it
            try:
                done = await asyncio.to_thread(requeue_hedges, self.cfg, self.store, [market], task_id, bps,
                                               echo=lines.append)
            except RequeueError as exc:
                raise ActionError(str(exc), 400 if exc.exit_code == 2 else 409) from None
            log.info("event=console.requeue market=%s task_id=%s max_slippage_bps=%s requeued=%s", market, task_id,
                     "config" if bps is None else bps, ",".join(d.new_task_id for d in done) or "-")
            if not done:
                raise ActionError(f"nothing to requeue: {task_id} is not a failed hedge of {market} (any more)")
            lines += [d.line() for d in done]
            return {"message": lines[-1], "lines": lines}
        return await self.exclusive(market, "a requeue", run)

    async def resume(self, market: str) -> dict[str, Any]:
        from ops.resume import resume

        async def run() -> dict[str, Any]:
            outcome = (await asyncio.to_thread(resume, self.store, [market], False, "console"))[0]
            log.info("event=console.resume market=%s resumed=%s failed=%d", market, outcome.resumed,
                     len(outcome.failed))
            if not outcome.resumed:
                raise ActionError(outcome.line())
            return {"message": outcome.line(), "lines": [outcome.line()]}
        return await self.exclusive(market, "a resume", run)

    async def flatten(self, market: str) -> dict[str, Any]:
        from hedge.flatten import FlattenError
        from ops.flatten import flatten

        async def run() -> dict[str, Any]:
            lines: list[str] = []
            log.info("event=console.flatten market=%s", market)
            try:
                self._flatten_route_problem()
                ok = await flatten(self.cfg, self.store, [market], lines.append)
            except (FlattenError, RuntimeError) as exc:
                log.warning("event=console.flatten_failed market=%s error=%s", market, exc)
                raise ActionError(f"flatten error: {exc}") from None
            for line in lines:
                log.info("event=console.flatten_step market=%s %s", market, line)
            if not ok:
                raise ActionError(f"flatten of {market} did not end flat: {lines[-1] if lines else ''}")
            return {"message": lines[-1] if lines else f"market={market} flattened", "lines": lines}
        return await self.exclusive(market, "a flatten", run)

    def _flatten_route_problem(self) -> None:
        """The console holds no account key: without the maker (A's key) or the worker (B's key)
        running, the flatten would have to sign itself; say so instead of failing on a missing key."""
        from hedge.flatten import FlattenError
        from ops.flatten import choose_route
        from venue.keys import private_key
        route = choose_route(self.cfg, self.store)
        for account, via, program in ((self.cfg.account_a, route.a, "maker"), (self.cfg.account_b, route.b, "worker")):
            if via != "cli":
                continue
            try:
                private_key(self.cfg, account)
            except ConfigError:
                raise FlattenError(f"the {program} is not running ({account.name}'s key has no lease) and the console "
                                   f"holds no account key: start the {program}, or run `lighter-hedge flatten` "
                                   f"where the keys are; nothing was changed") from None

    def _failed_of(self, market: str, task_id: str) -> dict[str, Any]:
        info = self.store.failed(market).get(task_id)
        if info is None:
            raise ActionError(f"{task_id} is not a failed hedge of {market} (requeued already?)")
        return info


# ---- HTTP ---------------------------------------------------------------------------------------------

CONSOLE_KEY = web.AppKey("console", Console)


def make_app(console: Console) -> web.Application:
    app = web.Application(middlewares=[_guard], client_max_size=16 * 1024)
    app[CONSOLE_KEY] = console
    for path in PAGES:
        app.router.add_get(path, _page)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/api/state", _state)
    app.router.add_post("/api/requeue/preview", _action("preview"))
    app.router.add_post("/api/requeue", _action("requeue"))
    app.router.add_post("/api/resume", _action("resume"))
    app.router.add_post("/api/flatten", _action("flatten"))
    return app


@web.middleware
async def _guard(request: web.Request, handler):
    console = request.app[CONSOLE_KEY]
    port = console.cfg.console_port
    if request.path == "/healthz":   # the readiness probe of `up`: says nothing
        return await handler(request)
    refusal = cv.host_refusal(request.headers.get("Host"), port)
    if refusal:
        log.warning("event=console.refused reason=host path=%s", request.path)
        return _json({"ok": False, "message": refusal}, 421)
    if not cv.basic_auth_ok(request.headers.get("Authorization"), console.creds.user, console.creds.password):
        log.info("event=console.unauthorized path=%s", request.path)
        return web.Response(status=401, text="authentication required",
                            headers={"WWW-Authenticate": f'Basic realm="{cv.REALM}", charset="UTF-8"',
                                     **SECURITY_HEADERS})
    if request.method == "POST":
        refusal = cv.post_refusal(request.headers, port)
        if refusal:
            log.warning("event=console.refused reason=csrf path=%s detail=%s", request.path, json.dumps(refusal))
            return _json({"ok": False, "message": refusal}, 403)
    elif request.method not in ("GET", "HEAD"):
        return _json({"ok": False, "message": "method not allowed"}, 405)
    response = await handler(request)
    response.headers.update(SECURITY_HEADERS)
    return response


async def _healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok", headers=SECURITY_HEADERS)


async def _page(request: web.Request) -> web.Response:
    name, content_type = PAGES[request.path]
    return web.Response(body=(STATIC / name).read_bytes(), content_type=content_type, charset="utf-8")


async def _state(request: web.Request) -> web.Response:
    console = request.app[CONSOLE_KEY]
    try:
        return _json(await console.view())
    except redis.RedisError as exc:
        return _json({"ok": False, "message": redis_error_line(console.cfg.redis_url, exc)}, 503)


def _action(name: str):
    async def handle(request: web.Request) -> web.Response:
        console = request.app[CONSOLE_KEY]
        try:
            try:
                body = await request.json()
            except (ValueError, UnicodeDecodeError):
                raise cv.InputError("expected a JSON body") from None
            market, task_id, bps = cv.action_body(body, console.markets, task=name in ("preview", "requeue"))
            if name == "preview":
                result = await console.preview(market, task_id, bps)
            elif name == "requeue":
                result = await console.requeue(market, task_id, bps)
            elif name == "resume":
                result = await console.resume(market)
            else:
                result = await console.flatten(market)
            return _json({"ok": True, **result})
        except cv.InputError as exc:
            return _json({"ok": False, "message": str(exc)}, 400)
        except ActionError as exc:
            return _json({"ok": False, "message": str(exc)}, exc.status)
        except ConfigError as exc:
            return _json({"ok": False, "message": f"config error: {exc}"}, 409)
        except redis.RedisError as exc:
            return _json({"ok": False, "message": redis_error_line(console.cfg.redis_url, exc)}, 503)
        except Exception as exc:   # one line to the page and the log, never a traceback in the page
            log.exception("event=console.action_error action=%s error=%s", name, type(exc).__name__)
            return _json({"ok": False, "message": f"{name} failed: {type(exc).__name__}: {exc}"}, 500)
    return handle


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body, default=str), status=status, content_type="application/json")


# ---- the process ------------------------------------------------------------------------------------

class ListenError(Exception):
    """The console's port cannot be bound; str() is the line to print."""


async def serve(cfg: Config, store: Store, markets: list[str], creds: Credentials, stop: asyncio.Event) -> None:
    from ops.alerter import ConsumerProbe
    probe = ConsumerProbe(CONSUMER_INSPECT_S).start()
    runner = web.AppRunner(make_app(Console(cfg, store, markets, creds, probe)), access_log=None,
                           handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", cfg.console_port)   # loopback only, whatever the config says
        try:
            await site.start()
        except OSError as exc:
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ListenError(f"cannot listen on 127.0.0.1:{cfg.console_port} ({why}); console.port in config.yaml") \
                from None
        log.info("event=console.start url=http://127.0.0.1:%d user=%s markets=%s venue_refresh_s=%g", cfg.console_port,
                 creds.user, ",".join(markets), cv.venue_refresh_s(cfg.rate_limit))
        await stop.wait()
        log.info("event=console.stop")
    finally:
        probe.stop()
        await runner.cleanup()


def run_console(cfg: Config, store: Store, markets: list[str], creds: Credentials) -> None:
    import signal

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(cfg, store, markets, creds, stop)
    asyncio.run(main())
