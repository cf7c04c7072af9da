"""The simulator's HTTP + WebSocket server (aiohttp, one loopback port).

Run it in its own process (`python -m venue.sim ...`): the Go signer inside lighter-sdk
makes blocking HTTP calls, which would deadlock a simulator sharing the caller's loop.

Rejections are HTTP 400 `{"code": <lighter code>, "message": "..."}`. Bad query params
use code 20001 ("invalid param: ..."). Any unexpected exception is logged and answered
with HTTP 500 `{"code": 29500, ...}` - the server never dies on input.

sendTxBatch semantics (chosen here): elements are taken in order; the first failing
element stops the batch; elements before it stay taken. The answer is then HTTP 400
with that element's code, a message "tx K of N rejected: <reason>; the K txs before it
were applied", and `tx_hash` listing the taken hashes.

Taken is not executed: sendTx answers 200 with `tx_hash` and `predicted_execution_time_ms`
as soon as the tx is taken; the engine executes it after its tier's speed bump (a timer on
this loop, plus every tick as a backstop). `GET /api/v1/tx?by=hash` tells pending /
executed / failed.

Request limits (venue.sim.tiers, venue.sim.ratelimit): every `/api/v1/*` request counts
against one rolling-minute bucket. A request that names its account - a signed tx
(sendTx, sendTxBatch) or an auth token (`authorization` header or `auth` query) - counts
against that account's L1 address (the master's: A and B share it) at its tier; any other
request counts against the client IP at `ip_requests_per_minute`, unweighted. Over the
limit: HTTP 429 `{"code": 23000, "message": ...}`, nothing done. `/admin/*` and `/stream`
are never limited here (the WebSocket has its own limits in venue.sim.stream).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp import web

from hedge.config import is_loopback_host

from .auth import AuthError, parse_auth_token
from .config import SimConfig, SimConfigError, parse_sim_config
from .engine import AdminError, Engine, TakenTx, TxStatus
from .faults import FaultConfigError, FaultPlan
from .ratelimit import RateLimiter
from .stream import StreamHub
from .tiers import TIERS, Tier, endpoint_name, endpoint_weight
from .txcodec import TxRejected, load_tx_info, parse_tx, parse_tx_type, peek_account_index
from .units import decimal_to_units
from .views import (admin_state_json, detailed_account_json, order_book_detail_json,
                    order_book_json, order_json, simple_order_json)

log = logging.getLogger("venue.sim.server")

JSON = "application/json"
VOLUME_QUOTA = 1_000_000
MAX_BATCH = 50


class ParamError(Exception):
    def __init__(self, message: str, code: int = 20001):
        super().__init__(message)
        self.code = code
        self.message = message


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type=JSON)


def _q_int(request: web.Request, name: str, *, required: bool = True, default: int | None = None,
           lo: int | None = None, hi: int | None = None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        if required:
            raise ParamError(f"invalid param: missing required query parameter {name}")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ParamError(f"invalid param: {name} must be an integer, got {raw[:40]!r}") from None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ParamError(f"invalid param: {name}={value} out of range {lo}..{hi}")
    return value


class SimServer:
    def __init__(self, config: SimConfig, *, seed: int | None = None,
                 public_keys: dict[int, dict[int, str]] | None = None,
                 faults: dict | None = None):
        self.config = config
        self.seed = config.seed if seed is None else seed
        self.engine = Engine(config, self.seed)
        for account_index, keys in (public_keys or {}).items():
            for key_index, public_key in keys.items():
                self.engine.register_key(account_index, key_index, public_key)
        self.faults = FaultPlan.from_settings(faults if faults is not None else config.faults,
                                              self.seed)
        self.hub = StreamHub(self.engine, float(config.ws_ping_interval_s))
        self._ticker: asyncio.Task | None = None
        self._executor: asyncio.TimerHandle | None = None
        self._executor_at_ms = 0
        self.limiter = RateLimiter()
        self.ip_tier = Tier("ip", weighted=False, limit=config.ip_requests_per_minute,
                            taker_delay_ms=0, maker_delay_ms=0)
        # who ("account:<index>" or "ip:<addr>") -> endpoint -> requests / weight / http_429
        self.request_stats: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))

    # ------------------------------------------------------------ app
    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=1 << 20)
        get, post = "GET", "POST"
        routes = [
            (post, "/api/v1/sendTx", self.send_tx), (post, "/api/v1/sendTxBatch", self.send_tx_batch),
            (get, "/api/v1/nextNonce", self.next_nonce), (get, "/api/v1/apikeys", self.api_keys),
            (get, "/api/v1/account", self.account),
            (get, "/api/v1/accountActiveOrders", self.account_active_orders),
            (get, "/api/v1/accountInactiveOrders", self.account_inactive_orders),
            (get, "/api/v1/accountOrders", self.account_orders),
            (get, "/api/v1/orderBooks", self.order_books),
            (get, "/api/v1/orderBookDetails", self.order_book_details),
            (get, "/api/v1/orderBookOrders", self.order_book_orders),
            (get, "/api/v1/recentTrades", self.recent_trades), (get, "/api/v1/trades", self.trades),
            (get, "/api/v1/tx", self.tx), (get, "/stream", self.hub.handle),
            (get, "/admin/faults", self.admin_get_faults), (post, "/admin/faults", self.admin_set_faults),
            (post, "/admin/ws/drop", self.admin_ws_drop), (post, "/admin/ws/pause", self.admin_ws_pause),
            (post, "/admin/market", self.admin_market), (post, "/admin/fill", self.admin_fill),
            (get, "/admin/orders_log", self.admin_orders_log), (get, "/admin/state", self.admin_state),
            (get, "/admin/trades", self.admin_trades), (post, "/admin/register_key", self.admin_register_key),
            (get, "/admin/stats", self.admin_stats), (get, "/admin/orders", self.admin_orders), (get, "/admin/tier", self.admin_get_tier),
            (post, "/admin/tier", self.admin_set_tier),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
        app.on_startup.append(self._start_ticker)
        app.on_shutdown.append(self._stop)
        return app

    async def _start_ticker(self, _app: web.Application) -> None:
        self.engine.tick(now_ms())
        self.hub.publish()
        self._ticker = asyncio.create_task(self._tick_loop())

    async def _stop(self, _app: web.Application) -> None:
        if self._ticker:
            self._ticker.cancel()
        if self._executor:
            self._executor.cancel()
        await self.hub.close_all()

    def _arm_executor(self) -> None:
        """One timer, for the earliest taken tx: it executes when its speed bump has passed."""
        due_ms = self.engine.next_execution_ms()
        if due_ms is None or (self._executor is not None and self._executor_at_ms <= due_ms):
            return
        if self._executor is not None:
            self._executor.cancel()
        self._executor_at_ms = due_ms
        self._executor = asyncio.get_running_loop().call_later(
            max(0, due_ms - now_ms() + 1) / 1000, self._execute_due)

    def _execute_due(self) -> None:
        self._executor = None
        try:
            self.engine.execute_due(now_ms())
        except Exception:  # noqa: BLE001 - keep executing; the failure is logged
            log.exception("event=execute_error")
        finally:
            self.hub.publish()
            self._arm_executor()

    async def _tick_loop(self) -> None:
        period_s = self.config.tick_ms / 1000
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += period_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            try:
                self.engine.tick(now_ms())
                self.hub.publish()
                self._arm_executor()
            except Exception:  # noqa: BLE001 - keep ticking; the failure is logged
                log.exception("event=tick_error")

    @web.middleware
    async def _middleware(self, request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        started = time.perf_counter()
        request["recv_us"] = time.time_ns() // 1000  # arrival, for the order log's ts_us (benchmarks)
        status = 500
        try:
            if request.path.startswith("/api/v1/"):
                refused = await self._rate_limit(request)
                if refused is not None:
                    status = 429
                    return refused
            response = await handler(request)
            status = response.status
            return response
        except (TxRejected, ParamError) as exc:
            status = 400
            return _json({"code": exc.code, "message": exc.message}, 400)
        except (AdminError, FaultConfigError) as exc:
            status = 400
            return _json({"code": 20001, "message": str(exc)}, 400)
        except web.HTTPException as exc:
            status = exc.status
            if exc.status < 400:
                raise
            return _json({"code": exc.status, "message": exc.reason}, exc.status)
        except asyncio.CancelledError:
            status = 499
            raise
        except Exception as exc:  # noqa: BLE001 - never crash on input
            log.exception("event=handler_error path=%s", request.path)
            return _json({"code": 29500, "message": f"internal error: {type(exc).__name__}"}, 500)
        finally:
            if request.path != "/stream":
                log.info("event=http method=%s path=%s status=%s duration_ms=%.1f",
                         request.method, request.path, status,
                         (time.perf_counter() - started) * 1000)

    # ------------------------------------------------------------ request limits
    async def _rate_limit(self, request: web.Request) -> web.Response | None:
        """Counts the request against its bucket; the 429 answer when the bucket is full."""
        endpoint = endpoint_name(request.path)
        account = await self._request_account(request, endpoint)
        who = f"account:{account.index}" if account is not None else f"ip:{request.remote}"
        stats = self.request_stats[who][endpoint]
        if not self.config.rate_limits:
            admitted, reason = True, ""
        elif account is not None:
            bucket = f"l1:{account.l1_address}"
            admitted, reason = self._admit(bucket, TIERS[account.tier], endpoint)
        else:
            admitted, reason = self._admit(f"ip:{request.remote}", self.ip_tier, endpoint)
        if admitted:
            stats["requests"] += 1
            stats["weight"] += endpoint_weight(endpoint)
            return None
        stats["http_429"] += 1
        log.info("event=rate_limited endpoint=%s who=%s reason=%r", endpoint, who, reason)
        if endpoint in ("sendTx", "sendTxBatch"):
            form = await request.post()
            for tx_type, tx_info in self._form_txs(form):
                self.engine.log_unapplied(tx_type, tx_info, now_ms(), 23000,
                                          f"too many requests: {reason} (not taken)", request.get("recv_us"))
        return _json({"code": 23000, "message": f"too many requests: {reason}"}, 429)

    def _admit(self, bucket: str, tier: Tier, endpoint: str) -> tuple[bool, str]:
        admission = self.limiter.admit(bucket, tier, endpoint, now_ms())
        return admission.admitted, admission.reason

    async def _request_account(self, request: web.Request, endpoint: str):
        """The user account a request answers for (signed tx or auth token), else None."""
        index = None
        if endpoint in ("sendTx", "sendTxBatch") and request.method == "POST":
            txs = self._form_txs(await request.post())
            index = peek_account_index(txs[0][1]) if txs else None
        else:
            token = (request.headers.get("authorization") or request.query.get("auth")
                     or request.query.get("authorization"))
            if token:
                try:
                    index = parse_auth_token(token, now_ms() // 1000).account_index
                except AuthError:
                    index = None  # an unusable token buys no L1 budget: counted per IP
        acct = self.engine.accounts.get(index) if index is not None else None
        return acct if acct is not None and not acct.synthetic else None

    @staticmethod
    def _form_txs(form: Any) -> list[tuple[Any, Any]]:
        if form.get("tx_info") is not None:
            return [(form.get("tx_type"), form.get("tx_info"))]
        try:
            return list(zip(json.loads(str(form.get("tx_types"))), json.loads(str(form.get("tx_infos")))))
        except (TypeError, ValueError):
            return []

    # ------------------------------------------------------------ transactions
    def _resp_send_tx(self, taken: TakenTx) -> dict[str, Any]:
        return {"code": 200, "message": "{\"ratelimit\": \"didn't use volume quota\"}",
                "tx_hash": taken.tx_hash, "predicted_execution_time_ms": self._predicted_ms(taken),
                "volume_quota_remaining": VOLUME_QUOTA}

    def _predicted_ms(self, taken: TakenTx) -> int:
        """What the venue predicts: its tier's delay (it does not know a tx will run late)."""
        acct = self.engine.accounts[taken.tx.account_index]
        return taken.taken_at_ms + self.engine.delay_ms(acct, taken.tx)

    def _apply(self, tx_type: Any, tx_info: Any, *, force_slippage: bool = False,
               recv_us: int | None = None) -> TakenTx:
        """Takes one tx; executes it now when its delay is zero, else arms the timer."""
        late_ms = self.faults.late_delay_ms(peek_account_index(tx_info))
        taken = self.engine.take(tx_type, tx_info, now_ms(), delay_ms=late_ms, late=late_ms is not None,
                                 force_slippage=force_slippage, recv_us=recv_us)
        try:
            if taken.execute_at_ms <= now_ms():
                self.engine.execute_due(now_ms())
        finally:
            self.hub.publish()
            self._arm_executor()
        order = taken.outcome.order if taken.outcome else None
        log.info("event=tx result=taken tx_type=%s account=%s nonce=%s tx_hash=%s execute_in_ms=%s "
                 "late=%s status=%s order_index=%s order_status=%s", taken.tx.tx_type,
                 taken.tx.account_index, taken.tx.nonce, taken.tx_hash,
                 taken.execute_at_ms - taken.taken_at_ms, taken.late, taken.status.name.lower(),
                 order.order_index if order else None, order.status if order else None)
        return taken

    async def send_tx(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        tx_type, tx_info = form.get("tx_type"), form.get("tx_info")
        if tx_type is None or tx_info is None:
            missing = [k for k in ("tx_type", "tx_info") if form.get(k) is None]
            raise TxRejected(21501, f"invalid tx info: missing form field(s) {missing}")
        return await self._with_faults(request, [(tx_type, tx_info)], batch=False)

    async def send_tx_batch(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        raw_types, raw_infos = form.get("tx_types"), form.get("tx_infos")
        if raw_types is None or raw_infos is None:
            raise TxRejected(21501, "invalid tx info: sendTxBatch needs form fields tx_types "
                                    "and tx_infos (JSON lists)")
        try:
            types = json.loads(str(raw_types))
            infos = json.loads(str(raw_infos))
        except ValueError:
            raise TxRejected(21501, "invalid tx info: tx_types and tx_infos must be JSON lists") from None
        if not isinstance(types, list) or not isinstance(infos, list) or len(types) != len(infos):
            raise TxRejected(21501, "invalid tx info: tx_types and tx_infos must be JSON lists "
                                    "of the same length")
        if not types or len(types) > MAX_BATCH:
            raise TxRejected(21501, f"invalid tx info: a batch holds 1..{MAX_BATCH} txs, got {len(types)}")
        return await self._with_faults(request, list(zip(types, infos)), batch=True)

    async def _with_faults(self, request: web.Request, txs: list[tuple[Any, Any]],
                           batch: bool) -> web.StreamResponse:
        account = peek_account_index(txs[0][1])
        recv_us = request.get("recv_us")
        decision = self.faults.decide(account)
        if decision.latency_ms:
            await asyncio.sleep(decision.latency_ms / 1000)
        outcome = decision.outcome
        if outcome != "none":
            log.info("event=fault kind=%s account=%s timeout_applies=%s", outcome, account,
                     decision.timeout_applies if outcome == "timeout" else "-")
        not_applied = {"rate_limit": (429, 23000, "too many requests"),
                       "invalid_nonce": (400, 21104, "invalid nonce"),
                       "http_5xx": (502, 502, "bad gateway"),
                       "reject": (400, self.faults.reject_code, self.faults.reject_message())}
        if outcome in not_applied:
            status, code, message = not_applied[outcome]
            for tx_type, tx_info in txs:
                self.engine.log_unapplied(tx_type, tx_info, now_ms(), code,
                                          f"fault {outcome}: {message} (not applied)", recv_us)
            return _json({"code": code, "message": message}, status)
        if outcome == "timeout":
            if decision.timeout_applies == "before":
                self._apply_quietly(txs, recv_us)
            await asyncio.sleep(float(decision.timeout_s))
            if decision.timeout_applies == "after":
                self._apply_quietly(txs, recv_us)
            elif decision.timeout_applies == "never":
                for tx_type, tx_info in txs:
                    self.engine.log_unapplied(tx_type, tx_info, now_ms(), 0,
                                              "fault timeout: connection closed (not applied)", recv_us)
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError()  # nothing more can be written on this connection
        response = self._apply_all(txs, batch, force_slippage=outcome == "slippage", recv_us=recv_us)
        if outcome == "http_5xx_after":
            return _json({"code": 502, "message": "bad gateway"}, 502)
        return response

    def _apply_quietly(self, txs: list[tuple[Any, Any]], recv_us: int | None = None) -> None:
        for tx_type, tx_info in txs:
            try:
                self._apply(tx_type, tx_info, recv_us=recv_us)
            except TxRejected as rej:
                log.info("event=tx result=rejected code=%s message=%r during=timeout_fault",
                         rej.code, rej.message)
                return

    def _apply_all(self, txs: list[tuple[Any, Any]], batch: bool, *,
                   force_slippage: bool, recv_us: int | None = None) -> web.Response:
        hashes: list[str] = []
        taken: list[TakenTx] = []
        for position, (tx_type, tx_info) in enumerate(txs):
            try:
                if batch:
                    parse_tx_type(tx_type)
                    tx_info = tx_info if isinstance(tx_info, (str, dict)) else json.dumps(tx_info)
                    load_tx_info(tx_info)
                outcome = self._apply(tx_type, tx_info, force_slippage=force_slippage, recv_us=recv_us)
            except TxRejected as rej:
                log.info("event=tx result=rejected code=%s message=%r account=%s", rej.code,
                         rej.message, peek_account_index(tx_info))
                if not batch:
                    raise
                return _json({"code": rej.code, "tx_hash": hashes, "message":
                              f"tx {position} of {len(txs)} rejected: {rej.message}; the "
                              f"{position} txs before it were applied"}, 400)
            hashes.append(outcome.tx_hash)
            taken.append(outcome)
        if not batch:
            return _json(self._resp_send_tx(taken[0]))
        return _json({"code": 200, "message": "", "tx_hash": hashes,
                      "predicted_execution_time_ms": max(self._predicted_ms(t) for t in taken),
                      "volume_quota_remaining": VOLUME_QUOTA})

    # ------------------------------------------------------------ account reads
    async def next_nonce(self, request: web.Request) -> web.Response:
        account = _q_int(request, "account_index", lo=0)
        key = _q_int(request, "api_key_index", lo=0, hi=255)
        return _json({"code": 200, "nonce": self.engine.visible_next_nonce(account, key, now_ms())})

    async def api_keys(self, request: web.Request) -> web.Response:
        account_index = _q_int(request, "account_index", lo=0)
        key_filter = _q_int(request, "api_key_index", required=False, lo=0, hi=255)
        acct = self.engine.accounts.get(account_index)
        if acct is None or acct.synthetic:
            raise TxRejected(21100, f"account not found: {account_index}")
        keys = [{"account_index": account_index, "api_key_index": k,
                 "nonce": self.engine.visible_next_nonce(account_index, k, now_ms()),
                 "public_key": pub, "transaction_time": 0}
                for k, pub in sorted(acct.public_keys.items())
                if key_filter is None or key_filter == 255 or k == key_filter]
        return _json({"code": 200, "api_keys": keys})

    async def account(self, request: web.Request) -> web.Response:
        by = request.query.get("by")
        value = request.query.get("value")
        if by != "index":
            raise ParamError(f"invalid param: by must be 'index' in the simulator, got {by!r:.40}")
        if value is None:
            raise ParamError("invalid param: missing required query parameter value")
        try:
            index = int(value)
        except ValueError:
            raise ParamError(f"invalid param: value must be an account index, got {value[:40]!r}") from None
        if index not in self.engine.accounts:
            raise TxRejected(21100, f"account not found: {index}")
        return _json({"code": 200, "total": 1, "accounts": [detailed_account_json(self.engine, index)],
                      "next_cursor": ""})

    def _market_param(self, request: web.Request, required: bool) -> int | None:
        market_id = _q_int(request, "market_id", required=required, lo=0, hi=65535)
        if market_id == 255 and not required:
            return None  # the spec's "all markets" default
        if market_id is not None and market_id not in self.engine.markets:
            raise TxRejected(21602, f"invalid market index: {market_id} "
                                    f"(markets: {sorted(self.engine.markets)})")
        return market_id

    async def account_active_orders(self, request: web.Request) -> web.Response:
        account = _q_int(request, "account_index", lo=0)
        market_id = self._market_param(request, required=False)
        orders = self.engine.active_orders(account, market_id)
        return _json({"code": 200, "orders": [order_json(self.engine, o) for o in orders]})

    async def account_inactive_orders(self, request: web.Request) -> web.Response:
        account = _q_int(request, "account_index", lo=0)
        limit = _q_int(request, "limit", lo=1, hi=100)
        market_id = self._market_param(request, required=False)
        cursor = _q_int(request, "cursor", required=False, lo=0)
        orders = self.engine.inactive_orders(account, market_id, now_ms())
        if cursor is not None:
            orders = [o for o in orders if o.inactive_seq < cursor]
        page = orders[:limit]
        body: dict[str, Any] = {"code": 200, "orders": [order_json(self.engine, o) for o in page]}
        if len(orders) > limit:
            body["next_cursor"] = str(page[-1].inactive_seq)
        return _json(body)

    async def account_orders(self, request: web.Request) -> web.Response:
        raw = request.query.get("client_order_indexes", "")
        try:
            indexes = [int(x) for x in raw.split(",") if x.strip()]
        except ValueError:
            raise ParamError(f"invalid param: client_order_indexes must be comma-separated "
                             f"integers, got {raw[:60]!r}") from None
        if not indexes:
            raise ParamError("invalid param: missing required query parameter client_order_indexes")
        account = _q_int(request, "account_index", required=False, lo=0)
        orders = sorted(self.engine.orders_by_client_index(indexes, account, now_ms()),
                        key=lambda o: o.order_index)
        return _json({"code": 200, "orders": [order_json(self.engine, o) for o in orders]})

    # ------------------------------------------------------------ market reads
    async def order_books(self, request: web.Request) -> web.Response:
        market_id = self._market_param(request, required=False)
        books = [order_book_json(self.engine, m) for i, m in sorted(self.engine.markets.items())
                 if market_id is None or i == market_id]
        return _json({"code": 200, "order_books": books})

    async def order_book_details(self, request: web.Request) -> web.Response:
        market_id = self._market_param(request, required=False)
        details = [order_book_detail_json(self.engine, m) for i, m in sorted(self.engine.markets.items())
                   if market_id is None or i == market_id]
        return _json({"code": 200, "order_book_details": details, "spot_order_book_details": []})

    async def order_book_orders(self, request: web.Request) -> web.Response:
        market_id = self._market_param(request, required=True)
        limit = _q_int(request, "limit", lo=1, hi=250)
        market = self.engine.markets[market_id]
        bids, asks = market.bids.orders, market.asks.orders
        return _json({"code": 200, "total_asks": len(asks),
                      "asks": [simple_order_json(self.engine, o) for o in asks[:limit]],
                      "total_bids": len(bids),
                      "bids": [simple_order_json(self.engine, o) for o in bids[:limit]]})

    async def recent_trades(self, request: web.Request) -> web.Response:
        market_id = self._market_param(request, required=True)
        limit = _q_int(request, "limit", lo=1, hi=100)
        trades = self.engine.find_trades(market_id=market_id)[-limit:][::-1]
        return _json({"code": 200, "trades": [t.json for t in trades]})

    async def trades(self, request: web.Request) -> web.Response:
        """Trades filtered by account/market/order; sort_by timestamp|trade_id|block_height
        (all follow trade_id order); sort_dir desc (default) or asc; `from` keeps keys
        >= from (asc) or <= from (desc); `cursor` = the last trade_id of the previous page."""
        sort_by = request.query.get("sort_by")
        if sort_by not in ("timestamp", "trade_id", "block_height"):
            raise ParamError(f"invalid param: sort_by must be timestamp, trade_id or block_height, "
                             f"got {sort_by!r:.40}")
        sort_dir = request.query.get("sort_dir", "desc")
        if sort_dir not in ("asc", "desc"):
            raise ParamError(f"invalid param: sort_dir must be asc or desc, got {sort_dir!r:.40}")
        limit = _q_int(request, "limit", lo=1, hi=100)
        account = _q_int(request, "account_index", required=False, default=-1, lo=-1)
        market_id = self._market_param(request, required=False)
        order_index = _q_int(request, "order_index", required=False, lo=0)
        from_key = _q_int(request, "from", required=False, default=-1)
        cursor = _q_int(request, "cursor", required=False, lo=0)
        trades = self.engine.find_trades(account_index=None if account == -1 else account,
                                         market_id=market_id, order_index=order_index)
        key_of = {"timestamp": lambda t: t.timestamp_ms, "trade_id": lambda t: t.trade_id,
                  "block_height": lambda t: t.json["block_height"]}[sort_by]
        desc = sort_dir == "desc"
        if from_key is not None and from_key >= 0:
            trades = [t for t in trades if (key_of(t) <= from_key if desc else key_of(t) >= from_key)]
        if cursor is not None:
            trades = [t for t in trades if (t.trade_id < cursor if desc else t.trade_id > cursor)]
        if desc:
            trades = trades[::-1]
        page = trades[:limit]
        body: dict[str, Any] = {"code": 200, "trades": [t.json for t in page]}
        if len(trades) > limit:
            body["next_cursor"] = str(page[-1].trade_id)
        return _json(body)

    async def tx(self, request: web.Request) -> web.Response:
        """A taken tx by hash: status 1 pending, 2 executed, 0 failed (event_info carries the
        failure's code and message). Times in ms as the spec's examples; transaction_time in us."""
        if request.query.get("by") != "hash":
            raise ParamError("invalid param: by must be 'hash'")
        value = request.query.get("value", "")
        taken = self.engine.txs.get(value.removeprefix("0x"))
        if taken is None:
            raise TxRejected(21500, f"transaction not found: {value[:100]!r}")
        tx = taken.tx
        acct = self.engine.accounts[tx.account_index]
        event_info = ""
        if taken.status is TxStatus.FAILED:
            event_info = json.dumps({"error": {"code": taken.code, "message": taken.message}})
        elif taken.outcome is not None and taken.outcome.order is not None:
            order = taken.outcome.order
            event_info = json.dumps({"order_index": order.order_index, "status": order.status,
                                     "filled_base": order.filled_base})
        executed_at = taken.executed_at_ms if taken.status is not TxStatus.PENDING else 0
        return _json({"code": 200, "hash": taken.tx_hash, "type": tx.tx_type, "info": taken.tx_info,
                      "event_info": event_info, "status": int(taken.status),
                      "transaction_index": taken.seq, "l1_address": acct.l1_address,
                      "account_index": tx.account_index, "nonce": tx.nonce,
                      "expire_at": tx.expired_at_ms, "block_height": taken.block_height,
                      "queued_at": taken.taken_at_ms, "executed_at": executed_at,
                      "sequence_index": taken.seq, "parent_hash": "",
                      "api_key_index": tx.api_key_index,
                      "transaction_time": (executed_at or taken.taken_at_ms) * 1000,
                      "committed_at": executed_at, "verified_at": executed_at})

    # ------------------------------------------------------------ admin
    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            raise ParamError("invalid param: the body must be a JSON object") from None
        if not isinstance(body, dict):
            raise ParamError("invalid param: the body must be a JSON object")
        return body

    async def admin_get_faults(self, _request: web.Request) -> web.Response:
        return _json(self.faults.settings())

    async def admin_set_faults(self, request: web.Request) -> web.Response:
        self.faults = FaultPlan.from_settings(await self._body(request), self.seed)
        log.info("event=faults_set settings=%s", json.dumps(self.faults.settings(), sort_keys=True))
        return _json(self.faults.settings())

    async def admin_ws_drop(self, _request: web.Request) -> web.Response:
        return _json({"dropped": self.hub.drop_all()})

    async def admin_ws_pause(self, request: web.Request) -> web.Response:
        paused = (await self._body(request)).get("paused")
        if not isinstance(paused, bool):
            raise ParamError(f"invalid param: paused must be true or false, got {paused!r:.40}")
        self.hub.paused = paused
        if not paused:
            self.hub.publish()
        return _json({"paused": paused})

    async def admin_market(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        market_id = body.get("market_id")
        if market_id is not None and (isinstance(market_id, bool) or not isinstance(market_id, int)):
            raise ParamError(f"invalid param: market_id must be an integer, got {market_id!r:.40}")
        for key in ("random_walk", "taker_flow", "active"):
            if key in body and not isinstance(body[key], bool):
                raise ParamError(f"invalid param: {key} must be true or false, got {body[key]!r:.40}")
        mid = None
        if body.get("mid") is not None:
            targets = [market_id] if market_id is not None else list(self.engine.markets)
            if market_id is not None and market_id not in self.engine.markets:
                raise AdminError(f"unknown market_id {market_id}")
            if len(targets) != 1:
                raise ParamError("invalid param: setting mid needs a market_id")
            decimals = self.engine.markets[targets[0]].cfg.price_decimals
            try:
                mid = decimal_to_units(str(body["mid"]), decimals)
            except (ValueError, ArithmeticError):
                raise ParamError(f"invalid param: mid must be a decimal string with at most "
                                 f"{decimals} decimals, got {body['mid']!r:.40}") from None
        self.engine.set_market_mode(market_id, random_walk=body.get("random_walk"),
                                    taker_flow=body.get("taker_flow"), mid=mid,
                                    active=body.get("active"))
        if mid is not None:
            self.engine.tick(now_ms())
        self.hub.publish()
        return _json(admin_state_json(self.engine)["markets"])

    async def admin_fill(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        account, market_id = body.get("account_index"), body.get("market_id")
        for name, value in (("account_index", account), ("market_id", market_id)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ParamError(f"invalid param: {name} must be an integer, got {value!r:.40}")
        if market_id not in self.engine.markets:
            raise AdminError(f"unknown market_id {market_id}")
        sizes_raw = body.get("sizes")
        if not isinstance(sizes_raw, list) or not sizes_raw:
            raise ParamError("invalid param: sizes must be a non-empty list of decimal strings")
        decimals = self.engine.markets[market_id].cfg.size_decimals
        try:
            sizes = [decimal_to_units(str(s), decimals) for s in sizes_raw]
        except (ValueError, ArithmeticError):
            raise ParamError(f"invalid param: sizes must be decimal strings with at most "
                             f"{decimals} decimals, got {sizes_raw!r:.80}") from None
        one_frame = body.get("one_frame", False)
        if not isinstance(one_frame, bool):
            raise ParamError(f"invalid param: one_frame must be true or false, got {one_frame!r:.40}")
        delay_ms = body.get("delay_ms", 0)
        if isinstance(delay_ms, bool) or not isinstance(delay_ms, int) or not 0 <= delay_ms <= 60_000:
            raise ParamError(f"invalid param: delay_ms must be an integer 0..60000, got {delay_ms!r:.40}")

        def fill() -> list[int]:
            try:
                return self.engine.admin_fill(
                    account, market_id, sizes, now_ms(),
                    client_order_index=body.get("client_order_index"), order_index=body.get("order_index"))
            finally:
                self.hub.publish(one_frame=one_frame)

        if delay_ms:
            # Answered now, filled later: a benchmark's own HTTP round trip stays out of what it times.
            asyncio.get_running_loop().call_later(delay_ms / 1000, self._delayed_fill, fill)
            return _json({"trade_ids": [], "delay_ms": delay_ms})
        return _json({"trade_ids": fill()})

    @staticmethod
    def _delayed_fill(fill: Callable[[], list[int]]) -> None:
        try:
            fill()
        except Exception:  # noqa: BLE001 - nobody is waiting for the answer any more
            log.exception("event=admin.delayed_fill_failed")

    async def admin_orders_log(self, request: web.Request) -> web.Response:
        account = _q_int(request, "account_index", required=False)
        return _json({"orders_log": self.engine.order_log_view(account)})

    async def admin_stats(self, _request: web.Request) -> web.Response:
        """What the venue counted: requests / weight / 429s per account (or IP) and endpoint, the
        rolling minute of every bucket, and taken txs by fate."""
        txs = {str(a): dict(c) for a, c in sorted(self.engine.tx_counts.items())}
        total: Counter = Counter()
        for counts in self.engine.tx_counts.values():
            total.update(counts)
        return _json({
            "rate_limits": self.config.rate_limits,
            "requests": {who: {e: dict(c) for e, c in sorted(per.items())}
                         for who, per in sorted(self.request_stats.items())},
            "rolling_minute": self.limiter.usage(now_ms()),
            "txs": txs,
            "txs_total": {k: total.get(k, 0) for k in ("taken", "executed", "failed", "late", "expired")},
            "txs_pending": sum(1 for t in self.engine.txs.values() if t.status is TxStatus.PENDING),
        })

    async def admin_orders(self, request: web.Request) -> web.Response:
        """An account's active orders as accountActiveOrders shows them, for drivers and tests
        (outside every request limit, unlike the API)."""
        account = _q_int(request, "account_index", lo=0)
        market_id = self._market_param(request, required=False)
        return _json({"orders": [order_json(self.engine, o)
                                 for o in self.engine.active_orders(account, market_id)]})

    async def admin_get_tier(self, _request: web.Request) -> web.Response:
        return _json({"tiers": {str(i): a.tier for i, a in sorted(self.engine.accounts.items())
                                if not a.synthetic}, "nonce_lag_ms": self.config.nonce_lag_ms,
                      "rate_limits": self.config.rate_limits})

    async def admin_set_tier(self, request: web.Request) -> web.Response:
        """Switches an L1 address's tier (every account under the account's master), as
        Lighter's changeAccountTier does."""
        body = await self._body(request)
        account, tier = body.get("account_index"), body.get("tier")
        if isinstance(account, bool) or not isinstance(account, int):
            raise ParamError(f"invalid param: account_index must be an integer, got {account!r:.40}")
        changed = self.engine.set_tier(account, tier)
        log.info("event=tier_set accounts=%s tier=%s", ",".join(map(str, changed)), tier)
        return _json({"accounts": changed, "tier": tier})

    async def admin_state(self, _request: web.Request) -> web.Response:
        return _json(admin_state_json(self.engine))

    async def admin_trades(self, request: web.Request) -> web.Response:
        account = _q_int(request, "account_index", required=False)
        return _json({"trades": [t.json for t in self.engine.find_trades(account_index=account)]})

    async def admin_register_key(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        account, key, public_key = body.get("account_index"), body.get("api_key_index"), body.get("public_key")
        for name, value in (("account_index", account), ("api_key_index", key)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ParamError(f"invalid param: {name} must be a non-negative integer, got {value!r:.40}")
        if not isinstance(public_key, str):
            raise ParamError("invalid param: public_key must be a hex string")
        master = body.get("master")
        collateral = body.get("collateral")
        self.engine.register_key(account, key, public_key, master=master,
                                 collateral=Decimal(str(collateral)) if collateral is not None else None)
        return _json({"account_index": account, "api_key_index": key,
                      "next_nonce": self.engine.next_nonce(account, key)})


# ---------------------------------------------------------------- process entry
def load_public_keys(path: str) -> dict[int, dict[int, str]]:
    """Reads only the public keys of a keys file; never logs its content."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--keys-file {path}: cannot read a JSON object ({type(exc).__name__})")
    if not isinstance(raw, dict):
        raise SystemExit(f"--keys-file {path}: expected a JSON object keyed by account index")
    out: dict[int, dict[int, str]] = {}
    for account, entries in raw.items():
        if not account.isdigit():
            continue   # not an account: the engine's task signing key (venue.keys)
        entries = entries if isinstance(entries, list) else [entries]
        for entry in entries:
            try:
                out.setdefault(int(account), {})[int(entry["api_key_index"])] = str(entry["public_key"])
            except (KeyError, TypeError, ValueError):
                raise SystemExit(f"--keys-file {path}: account {account!r}: each entry needs "
                                 "api_key_index and public_key") from None
    return out


def load_config(path: str | None) -> SimConfig:
    if path is None:
        return parse_sim_config({})
    import yaml
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SimConfigError(f"--config {path}: cannot read YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise SimConfigError(f"--config {path}: expected a mapping at the top level")
    return parse_sim_config(raw.get("sim"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m venue.sim",
                                     description="Local Lighter-protocol exchange simulator")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address only")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--seed", type=int, default=None, help="overrides sim.seed")
    parser.add_argument("--config", default=None, help="YAML file; only its `sim:` key is read")
    parser.add_argument("--keys-file", default=None, help="JSON; only public keys are read")
    parser.add_argument("--faults", default=None, help="JSON fault plan (overrides sim.faults)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if not is_loopback_host(args.host):
        print(f"refusing --host {args.host}: the simulator only listens on loopback "
              "(127.0.0.0/8, ::1, localhost)", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
        faults = json.loads(args.faults) if args.faults else None
        server = SimServer(config, seed=args.seed,
                           public_keys=load_public_keys(args.keys_file) if args.keys_file else None,
                           faults=faults)
    except (SimConfigError, FaultConfigError, AdminError, ValueError) as exc:
        print(f"sim config error: {exc}", file=sys.stderr)
        return 2
    log.info("event=start host=%s port=%s seed=%s tick_ms=%s markets=%s accounts=%s",
             args.host, args.port, server.seed, config.tick_ms,
             ",".join(m.symbol for m in config.markets),
             ",".join(str(a) for a in sorted(server.engine.accounts)))
    web.run_app(server.make_app(), host=args.host, port=args.port, print=None,
                access_log=None, shutdown_timeout=2)
    return 0
