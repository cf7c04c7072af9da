"""One Lighter account over the SDK: send orders, read orders, positions, trades and the book.

Create it inside the process and event loop that use it (the SDK's aiohttp session is bound
to its loop and the Go signer must not cross a fork). Thin: decisions live in hedge/.

Request budget (venue/budget.py, hedge/budget.py). Given one, every REST call this client makes
first takes its place in the budget A and B share: B's hedge sendTx (`send_signed`) as HEDGE, A's
orders and cancels (`place_limit`, `cancel`) as QUOTE, every read as READ, and a nonce read as the
send it serves. A QUOTE that had to wait logs `event=maker.paced wait_ms=<n> endpoint=<e>`: the
maker paces itself instead of being refused. An HTTP 429 (code 23000) means the venue's window
disagrees with ours: the client tells the budget (`venue_refused`), waits its backoff and retries
the same call - for a sendTx the same signed tx, whose nonce the refused request did not consume -
until `refused_deadline_s` (60 s) has passed; then the caller gets what it always got (a RETRYABLE
outcome for a send, the ApiException for a read). So a 429 is never a hedge failure by itself and
never spends a Celery retry. Without a budget (unit tests) nothing is paced and a 429 is answered
at once.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Awaitable, Callable, TypeVar

import aiohttp
import lighter

from hedge.accounts import AccountIdentity
from hedge.budget import Priority
from hedge.config import AccountConfig
from hedge.money import MarketSpec
from venue import errors
from venue.budget import BudgetWaitTimeout, RequestBudget
from venue.errors import SendOutcome

log = logging.getLogger("venue.client")

ACTIVE_STATUSES = {"in-progress", "pending", "open"}
AUTH_TOKEN_TTL_S = 480  # the SDK's tokens live 10 minutes; renew well before
REFUSED_DEADLINE_S = 60.0
NONCE_MEMORY = 1000  # nonces whose taker this process remembers (hedge.leg's evidence)
IN_DOUBT_TAKER = "an earlier tx in doubt"  # 429s are retried this long (Lighter's window is a minute) before the caller hears
T = TypeVar("T")


@dataclass(frozen=True)
class OrderView:
    """What we need of a venue Order, amounts as Decimal."""

    order_index: int
    client_order_index: int
    market_index: int
    is_ask: bool
    status: str
    initial_base: Decimal
    filled_base: Decimal
    filled_quote: Decimal
    price: Decimal

    @property
    def is_final(self) -> bool:
        return self.status not in ACTIVE_STATUSES

    @property
    def avg_price(self) -> Decimal | None:
        return (self.filled_quote / self.filled_base) if self.filled_base else None

    @classmethod
    def from_model(cls, o: Any) -> "OrderView":
        return cls(order_index=int(o.order_index), client_order_index=int(o.client_order_index),
                   market_index=int(o.market_index), is_ask=bool(o.is_ask), status=str(o.status),
                   initial_base=Decimal(o.initial_base_amount), filled_base=Decimal(o.filled_base_amount),
                   filled_quote=Decimal(o.filled_quote_amount), price=Decimal(o.price))


@dataclass(frozen=True)
class SignedTx:
    """A signed, not yet sent transaction (or the signer's refusal in `error`)."""

    client_order_index: int
    tx_type: int | None
    tx_info: str | None
    error: str | None
    nonce: int | None = None          # the witness of an answer in doubt (hedge.leg)
    tx_hash: str | None = None        # as the signer computed it
    expired_at_ms: int | None = None  # the tx's own ExpiredAt: it can never execute after this

    def __repr__(self) -> str:  # the signed payload stays out of logs
        return (f"SignedTx(client_order_index={self.client_order_index}, nonce={self.nonce}, "
                f"error={self.error!r})")


def _signed(client_order_index: int, nonce: int, signed: tuple[Any, Any, Any, Any]) -> SignedTx:
    tx_type, tx_info, tx_hash, err = signed
    expired_at_ms = None
    if err is None and tx_info:
        try:
            expired_at_ms = int(json.loads(tx_info)["ExpiredAt"])
        except (ValueError, KeyError, TypeError):
            expired_at_ms = None   # the leg keeps the bound it was written with
    return SignedTx(client_order_index, tx_type, tx_info, err, nonce, tx_hash or None, expired_at_ms)


_TRANSPORT_ERRORS = (asyncio.TimeoutError, aiohttp.ClientError)


def _env_proxy(url: str) -> str | None:
    """The proxy the environment (HTTPS_PROXY, NO_PROXY, ...) names for `url`, as the SDK's
    trust_env session would use it."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname is None or urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def _transport_outcome(exc: BaseException) -> SendOutcome:
    """What a failed HTTP exchange says about a sent tx."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        # The connection was never made: the tx cannot have reached the venue.
        return SendOutcome(errors.RETRYABLE, None, f"cannot connect to the venue: {exc.os_error}")
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        return SendOutcome(errors.IN_DOUBT, None, f"{type(exc).__name__}: no answer from the venue")
    return SendOutcome(errors.IN_DOUBT, None, f"{type(exc).__name__}: {exc}")


class VenueClient:
    order_expiry_s: float = 600.0   # A's limit orders: strategy.order_expiry_s (set by the maker)

    def __init__(self, signer: lighter.SignerClient, account: AccountConfig, send_timeout_s: float,
                 budget: RequestBudget | None = None, process: str | None = None,
                 refused_deadline_s: float = REFUSED_DEADLINE_S):
        """`budget`: the shared request budget (None = no pacing); `process`: this process's name
        in it (maker, worker, cli; default the account's name)."""
        self.signer = signer
        self.budget = budget
        self.process = process or account.name
        self.refused_deadline_s = refused_deadline_s
        self.account = account
        self.account_index = account.account_index
        self.api_key_index = account.api_key_index
        self.send_timeout_s = send_timeout_s
        self.order_api = lighter.OrderApi(signer.api_client)
        self.account_api = lighter.AccountApi(signer.api_client)
        self._specs: dict[int, MarketSpec] = {}
        self._send_tx_url = signer.api_client.configuration.host.rstrip("/") + "/api/v1/sendTx"
        self._tx_session: aiohttp.ClientSession | None = None
        self._tx_proxy: str | None = None
        self._token: tuple[str, float] | None = None
        self._nonce_takers: dict[int, str] = {}   # nonce -> which of our txs the venue took with it
        self._in_doubt: set[int] = set()          # nonces of txs sent whose answer was lost

    @classmethod
    async def open(cls, base_url: str, account: AccountConfig, private_key: str,
                   chain_id: int | None = None, send_timeout_s: float = 10.0, *,
                   budget: RequestBudget | None = None, process: str | None = None,
                   refused_deadline_s: float = REFUSED_DEADLINE_S) -> "VenueClient":
        signer = lighter.SignerClient(url=base_url, account_index=account.account_index,
                                      api_private_keys={account.api_key_index: private_key},
                                      chain_id=chain_id)
        return cls(signer, account, send_timeout_s, budget=budget, process=process,
                   refused_deadline_s=refused_deadline_s)

    async def close(self) -> None:
        if self._tx_session is not None:
            await self._tx_session.close()
        await self.signer.close()

    def _sendtx_session(self) -> aiohttp.ClientSession:
        """The session sendTx goes out on: the SDK's connection pool (same keep-alive connections,
        same TLS settings), but proxies resolved once here, not per request. The SDK's own session
        has trust_env=True, which costs two thread-pool hops per request (netrc and proxy lookups)."""
        if self._tx_session is None:
            rest = self.signer.api_client.rest_client
            self._tx_proxy = rest.proxy or _env_proxy(self._send_tx_url)
            self._tx_session = aiohttp.ClientSession(connector=rest.pool_manager.connector, connector_owner=False,
                                                     trust_env=False)
        return self._tx_session

    # ---- the request budget ---------------------------------------------------------------

    async def _acquire(self, endpoint: str, priority: Priority, deadline: float | None = None,
                       max_wait_ms: int | None = None, record_only: bool = False) -> None:
        """Take a place in the shared budget (nothing without one). BudgetWaitTimeout when no place
        comes before `deadline` (monotonic seconds) or within `max_wait_ms`. `record_only`: the
        request already went out; count it if the window has room, never wait."""
        if self.budget is None:
            return
        if record_only:
            try:
                await self.budget.acquire(endpoint, priority, self.process, 0)
            except BudgetWaitTimeout:
                log.warning("event=budget.full_after_send endpoint=%s priority=%s account=%s", endpoint,
                            priority.name.lower(), self.account_index)
            return
        if deadline is not None:
            left_ms = max(0, int((deadline - time.monotonic()) * 1000))
            max_wait_ms = left_ms if max_wait_ms is None else min(max_wait_ms, left_ms)
        waited_ms = await self.budget.acquire(endpoint, priority, self.process, max_wait_ms)
        if not waited_ms:
            return
        if priority is Priority.QUOTE:
            log.info("event=maker.paced wait_ms=%d endpoint=%s account=%s", waited_ms, endpoint, self.account_index)
        elif priority is Priority.HEDGE:  # the whole limit was in use: the hedge reserve is too small
            log.warning("event=hedge.paced wait_ms=%d endpoint=%s account=%s", waited_ms, endpoint,
                        self.account_index)
        else:
            log.debug("event=read.paced wait_ms=%d endpoint=%s account=%s process=%s", waited_ms, endpoint,
                      self.account_index, self.process)

    async def _refused(self, endpoint: str, deadline: float) -> bool:
        """After a 429: tell the budget and wait out its backoff. False once `deadline` has passed."""
        assert self.budget is not None
        backoff_ms = self.budget.venue_refused(endpoint, self.process)
        left_s = deadline - time.monotonic()
        log.warning("event=venue.http_429 endpoint=%s account=%s process=%s backoff_ms=%d retrying=%s",
                    endpoint, self.account_index, self.process, backoff_ms, str(left_s > 0).lower())
        if left_s <= 0:
            return False
        await asyncio.sleep(min(backoff_ms / 1000, left_s))
        return True

    async def _call(self, endpoint: str, priority: Priority, call: Callable[[], Awaitable[T]],
                    max_wait_ms: int | None = None) -> T:
        """One REST call through the budget. `call` makes a fresh request each time it is called:
        a 429 is retried the same way until `refused_deadline_s`, then raised as before."""
        deadline: float | None = None
        refusal: lighter.ApiException | None = None
        while True:
            try:
                await self._acquire(endpoint, priority, deadline, max_wait_ms)
            except BudgetWaitTimeout:
                if refusal is not None:   # the deadline of the 429 retries: the caller gets the 429
                    raise refusal from None
                raise
            try:
                result = await call()
            except lighter.ApiException as exc:
                if exc.status != 429 or self.budget is None:
                    raise
                refusal = exc
                deadline = deadline or time.monotonic() + self.refused_deadline_s
                if not await self._refused(endpoint, deadline):
                    raise
                continue
            if self.budget is not None:
                self.budget.venue_ok()
            return result

    # ---- metadata -------------------------------------------------------------------------

    async def market_spec(self, market_index: int) -> MarketSpec:
        spec = self._specs.get(market_index)
        if spec is None:
            try:
                details = await self._call("orderBookDetails", Priority.READ,
                                           lambda: self.order_api.order_book_details(market_id=market_index))
            except lighter.ApiException as exc:
                if exc.status == 429:   # still refused after the retries: not an unknown market
                    raise
                raise LookupError(f"venue has no perp market with market_id {market_index} "
                                  f"(HTTP {exc.status}: {errors.body_message(exc)})") from None
            found = [d for d in (details.order_book_details or []) if int(d.market_id) == market_index]
            if not found:
                raise LookupError(f"venue has no perp market with market_id {market_index}")
            d = found[0]
            spec = MarketSpec(market_index=market_index, symbol=str(d.symbol),
                              size_decimals=int(d.size_decimals), price_decimals=int(d.price_decimals),
                              min_base_amount=Decimal(d.min_base_amount),
                              min_quote_amount=Decimal(d.min_quote_amount or "0"))
            self._specs[market_index] = spec
        return spec

    # ---- sending --------------------------------------------------------------------------

    async def place_limit(self, spec: MarketSpec, client_order_index: int, is_ask: bool, base: Decimal,
                          price: Decimal, post_only: bool, reduce_only: bool = False,
                          on_signed: Callable[["SignedTx"], None] | None = None) -> SendOutcome:
        """A's resting order (QUOTE), signed and sent through the SDK like its create_order;
        `on_signed` sees it signed (nonce, hash, ExpiredAt) before it is sent.

        It expires at the venue `order_expiry_s` after signing (an absolute ms timestamp; the SDK's
        -1 would be 28 days): an order of a maker that died does not rest for weeks."""
        tif = (lighter.SignerClient.ORDER_TIME_IN_FORCE_POST_ONLY if post_only
               else lighter.SignerClient.ORDER_TIME_IN_FORCE_GOOD_TILL_TIME)
        base_int, price_int = spec.base_to_int(base), spec.price_to_int(price)
        return await self._send_quote(client_order_index, lambda nonce: self.signer.sign_create_order(
            spec.market_index, client_order_index, base_int, price_int, int(is_ask),
            lighter.SignerClient.ORDER_TYPE_LIMIT, tif, reduce_only, lighter.SignerClient.NIL_TRIGGER_PRICE,
            int(time.time() * 1000 + self.order_expiry_s * 1000), nonce=nonce, api_key_index=self.api_key_index),
            on_signed)

    async def place_market(self, spec: MarketSpec, client_order_index: int, is_ask: bool, base: Decimal,
                           worst_price_int: int, reduce_only: bool = False) -> SendOutcome:
        return await self.send_signed(await self.sign_market(spec, client_order_index, is_ask, base,
                                                             worst_price_int, reduce_only))

    async def take_nonce(self) -> int:
        """The key's next nonce for a hedge, taken now (no I/O once the key's nonce is known): a leg
        records it in its write-ahead record before it is signed (the witness, hedge.leg)."""
        return await self._next_nonce(Priority.HEDGE)

    async def sign_market(self, spec: MarketSpec, client_order_index: int, is_ask: bool, base: Decimal,
                          worst_price_int: int, reduce_only: bool = False, nonce: int | None = None) -> "SignedTx":
        """Sign a market order without sending it, with `nonce` (from take_nonce) or the next one;
        hand the result to exactly one of send_signed() or discard(), before signing anything else.

        Self-trade prevention across the master account: never trade against our own resting
        maker order; the resting order expires instead.
        """
        if nonce is None:
            nonce = await self._next_nonce(Priority.HEDGE)   # no I/O once the key's nonce is known
        return _signed(client_order_index, nonce, self.signer.sign_create_order(
            spec.market_index, client_order_index, spec.base_to_int(base), worst_price_int, int(is_ask),
            lighter.SignerClient.ORDER_TYPE_MARKET, lighter.SignerClient.ORDER_TIME_IN_FORCE_IMMEDIATE_OR_CANCEL,
            reduce_only, lighter.SignerClient.NIL_TRIGGER_PRICE, lighter.SignerClient.DEFAULT_IOC_EXPIRY,
            self_trade_behavior_mode=lighter.SignerClient.SELF_TRADE_BEHAVIOR_EXPIRE_MAKER,
            self_trade_equality_mode=lighter.SignerClient.SELF_TRADE_EQUALITY_MASTER_ACCOUNT_INDEX,
            nonce=nonce, api_key_index=self.api_key_index))

    async def _unsent_if_cancelled(self, signed: "SignedTx", wait: Awaitable[T]) -> T:
        """Awaits a wait for the budget before `signed` goes out. Cancelled meanwhile (the maker's stop
        ends its quote loops), the tx never reached the venue (a 429 before consumed nothing), so its
        nonce goes back. Kept, the gap would make the next tx on the key - the stop's cancel-all of
        A - fail with "invalid nonce" (21104)."""
        try:
            return await wait
        except asyncio.CancelledError:
            log.info("event=nonce.given_back account=%s nonce=%s reason=cancelled_before_send",
                     self.account_index, signed.nonce)
            self.discard(signed)
            raise

    def discard(self, signed: "SignedTx") -> None:
        """A signed tx that will never be sent (or that the venue refused before taking it) gives
        its nonce back - only if it is still the last one handed out."""
        self.give_back_nonce(signed.nonce)

    def give_back_nonce(self, nonce: int | None) -> None:
        manager = self.signer.nonce_manager
        if nonce is not None and manager.nonce.get(self.api_key_index) == nonce:
            manager.nonce[self.api_key_index] = nonce - 1

    # ---- nonces as witnesses (hedge.leg) ------------------------------------------------------

    def fence(self, nonce: int) -> None:
        """The next tx on this key is signed with `nonce`: of all txs with one nonce the venue takes
        at most one, so once it takes ours, an earlier tx with that nonce can never execute."""
        self.signer.nonce_manager.nonce[self.api_key_index] = nonce - 1
        log.info("event=nonce.fence account=%s api_key_index=%s nonce=%d", self.account_index,
                 self.api_key_index, nonce)

    def nonce_use(self, nonce: int) -> str | None:
        """Which of our txs the venue took with `nonce`, as far as this process saw: "coi=<n>" for
        one answered 200, IN_DOUBT_TAKER when a later tx with that nonce got "invalid nonce" (an
        earlier tx in doubt took it), None when unknown."""
        return self._nonce_takers.get(nonce)

    def note_nonce_used(self, nonce: int, taker: str | None = None) -> None:
        """The venue used `nonce` (a leg or order of ours found listed, or the key's nonce moved past
        it): never sign with it again, and remember who took it when known ("coi=<n>")."""
        if taker is not None:
            self._nonce_takers[nonce] = taker
        self._in_doubt.discard(nonce)
        manager = self.signer.nonce_manager
        if self.api_key_index in manager.nonce and manager.nonce[self.api_key_index] < nonce:
            manager.nonce[self.api_key_index] = nonce

    def _note_nonce(self, signed: "SignedTx", outcome: SendOutcome) -> bool:
        """Remember what the venue did with this tx's nonce. True when that also settled the key's
        next nonce (an answer in doubt: fenced; "invalid nonce" on a fence: the earlier tx took it)."""
        nonce = signed.nonce
        if nonce is None:
            return False
        manager = self.signer.nonce_manager
        if outcome.accepted:
            self._nonce_takers[nonce] = f"coi={signed.client_order_index}"
            self._in_doubt.discard(nonce)
        elif outcome.code == errors.INVALID_NONCE and nonce in self._in_doubt:
            # Our earlier tx with this nonce (sent, answer lost) was taken: go on after it.
            self._nonce_takers[nonce] = IN_DOUBT_TAKER
            self._in_doubt.discard(nonce)
            manager.nonce[self.api_key_index] = max(manager.nonce.get(self.api_key_index, nonce), nonce)
            return True
        elif outcome.kind == errors.IN_DOUBT:
            # Maybe taken, maybe not: fence it - the next tx on the key takes the same nonce.
            self._in_doubt.add(nonce)
            self.fence(nonce)
            return True
        else:
            return False
        while len(self._nonce_takers) > NONCE_MEMORY:
            self._nonce_takers.pop(next(iter(self._nonce_takers)))
        return False

    async def venue_next_nonce(self, priority: Priority = Priority.READ) -> int:
        """The key's next nonce as the venue shows it now (it shows a taken tx only after a lag)."""
        resp = await self._call("nextNonce", priority, lambda: lighter.TransactionApi(
            self.signer.api_client).next_nonce(account_index=self.account_index, api_key_index=self.api_key_index))
        return int(resp.nonce)

    async def tx_status(self, tx_hash: str) -> tuple[int, str] | None:
        """(status, event_info) of a tx the venue knows by hash - status 0 failed, 1 pending,
        2 executed - or None when the venue knows no such tx."""
        try:
            tx = await self._call("tx", Priority.READ, lambda: lighter.TransactionApi(
                self.signer.api_client).tx(by="hash", value=tx_hash))
        except lighter.ApiException as exc:
            if exc.status in (400, 404):
                return None
            raise
        return int(tx.status), str(tx.event_info or "")

    async def send_signed(self, signed: "SignedTx") -> SendOutcome:
        """POST a signed market order (B's hedge, or a close) to sendTx on the SDK's kept-alive
        session, as HEDGE in the budget.

        The same request the SDK's send_tx makes (form fields tx_type and tx_info), without its
        generated client's per-call validation and serialisation: about 0.8 ms less between the
        signature and the wire on this machine. With room in the window the hedge goes out first
        and is counted right after (no Redis round trip before the wire); otherwise it waits its
        turn. Nonce rules: see `_deliver`.
        """
        return await self._deliver(signed, Priority.HEDGE, self._post_raw)

    async def _deliver(self, signed: "SignedTx", priority: Priority,
                       post: Callable[["SignedTx"], Awaitable[SendOutcome]]) -> SendOutcome:
        """Send a signed tx through the budget and settle its nonce on the venue's answer.

        A 429 re-sends the same signed tx after the budget's backoff, until `refused_deadline_s`:
        the refused request consumed no nonce, so meanwhile the nonce is neither resynced nor given
        back. Afterwards: accepted keeps the nonce; a definite reject or a 429 gives it back (the
        venue took nothing); an answer in doubt fences it (the next tx on the key is signed with the
        same nonce, so at most one of the two is ever taken; see `_note_nonce`); "invalid nonce" on
        such a fence means the earlier tx took it; any other "invalid nonce" resyncs from the venue.
        """
        if signed.error is not None:
            self.discard(signed)
            return errors.classify_sdk_error(str(signed.error))
        deadline: float | None = None
        outcome: SendOutcome | None = None
        while True:
            if deadline is None and priority is Priority.HEDGE and self.budget is not None \
                    and self.budget.hedge_has_room("sendTx"):
                # A hedge's first try goes out at once and takes its place in the window right after:
                # the Redis round trip stays off the fill -> sendTx path. If the window was in fact
                # full, the venue's 429 sends us down the paced path below.
                outcome = await post(signed)
                await self._acquire("sendTx", priority, max_wait_ms=0, record_only=True)
            else:
                try:
                    await self._unsent_if_cancelled(signed, self._acquire("sendTx", priority, deadline))
                except BudgetWaitTimeout:   # only while retrying a 429: `outcome` is that 429
                    break
                outcome = await post(signed)
            if outcome.code != errors.TOO_MANY_REQUESTS or self.budget is None:
                break
            deadline = deadline or time.monotonic() + self.refused_deadline_s
            if not await self._unsent_if_cancelled(signed, self._refused("sendTx", deadline)):
                break
        assert outcome is not None
        nonce_settled = self._note_nonce(signed, outcome)
        if outcome.accepted:
            if self.budget is not None:
                self.budget.venue_ok()
            return outcome
        if nonce_settled:
            return outcome   # the next nonce is known without a venue read (which lags)
        if outcome.kind == errors.REJECTED or outcome.code in (errors.TOO_MANY_REQUESTS,
                                                               errors.TOO_MANY_PENDING_TXS):
            self.discard(signed)   # refused at the API: the nonce was not consumed
        else:
            await self.resync_nonce(priority)
        return outcome

    async def _post_raw(self, signed: "SignedTx") -> SendOutcome:
        """sendTx on the kept-alive session (send_signed's hot path)."""
        session = self._sendtx_session()
        rest = self.signer.api_client.rest_client
        try:
            async with asyncio.timeout(self.send_timeout_s):
                async with session.post(
                        self._send_tx_url, data={"tx_type": str(signed.tx_type), "tx_info": signed.tx_info},
                        headers={"Accept": "application/json"}, proxy=self._tx_proxy,
                        proxy_headers=rest.proxy_headers) as resp:
                    return errors.classify_response(resp.status, await resp.text())
        except _TRANSPORT_ERRORS as exc:
            return _transport_outcome(exc)

    async def cancel(self, market_index: int, order_index: int) -> SendOutcome:
        """Cancel one of A's orders (QUOTE), signed and sent through the SDK like its cancel_order."""
        return await self._send_quote(0, lambda nonce: self.signer.sign_cancel_order(
            market_index, order_index, nonce=nonce, api_key_index=self.api_key_index))

    async def schedule_cancel_all(self, at_ms: int) -> SendOutcome:
        """The dead-man's switch: the venue cancels all of this account's orders at `at_ms` (epoch
        ms) unless re-armed (a later one replaces it) or aborted. Sent as QUOTE, like a cancel."""
        return await self._send_quote(0, lambda nonce: self.signer.sign_cancel_all_orders(
            lighter.SignerClient.CANCEL_ALL_TIF_SCHEDULED, int(at_ms), nonce=nonce,
            api_key_index=self.api_key_index))

    async def cancel_all_now(self) -> SendOutcome:
        """Cancel all of this account's resting orders now (QUOTE): the maker's stop."""
        return await self._send_quote(0, lambda nonce: self.signer.sign_cancel_all_orders(
            lighter.SignerClient.CANCEL_ALL_TIF_IMMEDIATE, 0, nonce=nonce, api_key_index=self.api_key_index))

    async def abort_cancel_all(self) -> SendOutcome:
        """Disarm the scheduled cancel-all (QUOTE)."""
        return await self._send_quote(0, lambda nonce: self.signer.sign_cancel_all_orders(
            lighter.SignerClient.CANCEL_ALL_TIF_ABORT, 0, nonce=nonce, api_key_index=self.api_key_index))

    async def close_market(self, spec: MarketSpec, client_order_index: int, is_ask: bool, base: Decimal,
                           worst_price_int: int, on_signed: Callable[["SignedTx"], None] | None = None) -> SendOutcome:
        """A reduce-only market order (IOC, worst price) on a key whose other txs go through the
        SDK's per-key lock (A's, in the maker: flatten's close of A), as HEDGE: it takes exposure off."""
        return await self._send_quote(client_order_index, lambda nonce: self.signer.sign_create_order(
            spec.market_index, client_order_index, spec.base_to_int(base), worst_price_int, int(is_ask),
            lighter.SignerClient.ORDER_TYPE_MARKET, lighter.SignerClient.ORDER_TIME_IN_FORCE_IMMEDIATE_OR_CANCEL,
            True, lighter.SignerClient.NIL_TRIGGER_PRICE, lighter.SignerClient.DEFAULT_IOC_EXPIRY,
            nonce=nonce, api_key_index=self.api_key_index), on_signed, priority=Priority.HEDGE)

    async def _send_quote(self, client_order_index: int, sign: Callable[[int], tuple[Any, Any, Any, Any]],
                          on_signed: Callable[["SignedTx"], None] | None = None,
                          priority: Priority = Priority.QUOTE) -> SendOutcome:
        """A's order or cancel: the SDK signs it with the key's next nonce and its send_tx sends it,
        as QUOTE (or `priority`), under the SDK's per-key lock (the maker's market loops share A's key, so the txs
        reach the venue in nonce order, and a 429's re-send keeps its place). `on_signed` sees the
        signed tx (its nonce, hash and ExpiredAt) before it is sent: the maker's write-ahead."""
        async with self.signer.nonce_manager.lock(self.api_key_index):
            try:
                nonce = await self._next_nonce(priority)
            except (lighter.ApiException, *_TRANSPORT_ERRORS) as exc:  # nothing was signed or sent
                return SendOutcome(errors.RETRYABLE, None, f"cannot read the next nonce: {type(exc).__name__}: "
                                                           f"{errors.body_message(exc)}")
            signed = _signed(client_order_index, nonce, sign(nonce))
            if on_signed is not None and signed.error is None:
                on_signed(signed)
            return await self._deliver(signed, priority, self._post_sdk)

    async def _post_sdk(self, signed: "SignedTx") -> SendOutcome:
        """sendTx through the SDK's generated client (A's orders and cancels)."""
        try:
            async with asyncio.timeout(self.send_timeout_s):
                resp = await self.signer.send_tx(tx_type=signed.tx_type, tx_info=signed.tx_info)
        except lighter.ApiException as exc:
            return errors.classify_response(exc.status or 0, str(exc.body or exc.reason or ""))
        except _TRANSPORT_ERRORS as exc:
            return _transport_outcome(exc)
        outcome = errors.classify_code(int(resp.code), str(resp.message or ""))
        if outcome.accepted:
            return SendOutcome(errors.ACCEPTED, 200, str(resp.message or ""), str(resp.tx_hash))
        return outcome

    async def _next_nonce(self, priority: Priority) -> int:
        """The key's next nonce. Only the first use reads nextNonce from the venue (through the
        budget, as `priority`); after that it is local, so signing adds no round trip."""
        manager = self.signer.nonce_manager
        if self.api_key_index not in manager.nonce:
            await self._call("nextNonce", priority, lambda: asyncio.wait_for(
                manager.async_hard_refresh_nonce(self.api_key_index), self.send_timeout_s))
        _, nonce = await manager.async_next_nonce(self.api_key_index)
        return nonce

    async def resync_nonce(self, priority: Priority = Priority.READ) -> None:
        """Read the key's next nonce from the venue again (after a send in doubt or refused for its nonce)."""
        try:
            await self._call("nextNonce", priority,
                             lambda: self.signer.nonce_manager.async_hard_refresh_nonce(self.api_key_index))
        except Exception as exc:  # the next send resyncs again on "invalid nonce"
            log.warning("event=nonce.resync_failed account=%s error=%r", self.account_index, exc)

    # ---- reading --------------------------------------------------------------------------

    def auth_token(self) -> str:
        """A's or B's auth token for private REST reads and WebSocket channels (renewed before expiry)."""
        return self._auth()

    def _auth(self) -> str:
        now = time.monotonic()
        if self._token is None or now - self._token[1] > AUTH_TOKEN_TTL_S:
            token, err = self.signer.create_auth_token_with_expiry(api_key_index=self.api_key_index)
            if err is not None:
                raise RuntimeError(f"cannot create auth token: {err}")
            self._token = (token, now)
        return self._token[0]

    async def order_by_client_index(self, client_order_index: int, max_wait_ms: int | None = None) -> OrderView | None:
        """The newest order with this client_order_index, or None if the venue knows none.
        `max_wait_ms` bounds the wait for the budget (BudgetWaitTimeout past it)."""
        orders = await self._call("accountOrders", Priority.READ, lambda: self.order_api.account_orders(
            authorization=self._auth(), client_order_indexes=str(client_order_index),
            account_index=self.account_index), max_wait_ms)
        matching = [OrderView.from_model(o) for o in (orders.orders or [])
                    if int(o.client_order_index) == client_order_index]
        return max(matching, key=lambda o: o.order_index) if matching else None

    async def wait_order_final(self, client_order_index: int, timeout_s: float) -> OrderView | None:
        """A sent order's final state (a market order settles after the venue's taker delay).

        Bounded: returns the last state seen (maybe still active) or None if never found. The first
        read waits for the budget as long as it takes (None must mean "the venue knows no such
        order", never "not asked"); later reads only while the timeout lasts.
        """
        deadline = time.monotonic() + timeout_s
        delay_s = 0.005
        order = await self.order_by_client_index(client_order_index)
        while not (order is not None and order.is_final) and time.monotonic() < deadline:
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 0.2)
            try:
                order = await self.order_by_client_index(
                    client_order_index, max_wait_ms=max(0, int((deadline - time.monotonic()) * 1000)))
            except BudgetWaitTimeout:
                break
        return order

    async def active_orders(self, market_index: int) -> list[OrderView]:
        orders = await self._call("accountActiveOrders", Priority.READ, lambda: self.order_api.account_active_orders(
            account_index=self.account_index, market_id=market_index, authorization=self._auth()))
        return [OrderView.from_model(o) for o in (orders.orders or [])]

    async def inactive_orders(self, market_index: int, limit: int = 100) -> list[OrderView]:
        """Filled and cancelled orders, newest first."""
        orders = await self._call("accountInactiveOrders", Priority.READ, lambda: self.order_api.account_inactive_orders(
            account_index=self.account_index, limit=limit, market_id=market_index, authorization=self._auth()))
        return [OrderView.from_model(o) for o in (orders.orders or [])]

    async def position(self, market_index: int) -> Decimal:
        """Signed position (long > 0) on a market; 0 when the account holds none."""
        return (await self.positions()).get(market_index, Decimal(0))

    async def positions(self, account_index: int | None = None) -> dict[int, Decimal]:
        """Signed positions by market of this account, or of another (account data is public)."""
        index = self.account_index if account_index is None else account_index
        return await self._call("account", Priority.READ, lambda: read_positions(self.account_api, index))

    async def account_identity(self, account_index: int) -> AccountIdentity:
        """An account's master and L1 address (`/api/v1/account?by=index`; public, READ)."""
        accounts = await self._call("account", Priority.READ, lambda: self.account_api.account(
            by="index", value=str(account_index)))
        if not accounts.accounts:
            raise LookupError(f"venue has no account {account_index}")
        acct = accounts.accounts[0]
        # SDK 1.1.8's DetailedAccount has no master_account_index field: it lands in additional_properties.
        extra = getattr(acct, "additional_properties", None) or {}
        master = getattr(acct, "master_account_index", None)
        master = extra.get("master_account_index") if master is None else master
        return AccountIdentity(account_index, None if master is None else int(master),
                               str(acct.l1_address) if getattr(acct, "l1_address", None) else None)

    async def trades(self, market_index: int | None, limit: int = 100) -> list[dict[str, Any]]:
        """This account's most recent trades, oldest first, as plain dicts (the stream's shape)."""
        def call():
            kwargs: dict[str, Any] = {"sort_by": "trade_id", "sort_dir": "desc", "limit": limit,
                                      "account_index": self.account_index, "authorization": self._auth()}
            if market_index is not None:
                kwargs["market_id"] = market_index
            return self.order_api.trades(**kwargs)
        resp = await self._call("trades", Priority.READ, call)
        rows = [t.to_dict() for t in (resp.trades or [])]
        return sorted(rows, key=lambda t: int(t["trade_id"]))

    async def book_prices(self, market_index: int, limit: int = 50) -> tuple[list[Decimal], list[Decimal]]:
        """Distinct bid prices (best first, descending) and ask prices (best first, ascending)."""
        book = await self._call("orderBookOrders", Priority.READ,
                                lambda: self.order_api.order_book_orders(market_id=market_index, limit=limit))
        bids = sorted({Decimal(o.price) for o in (book.bids or [])}, reverse=True)
        asks = sorted({Decimal(o.price) for o in (book.asks or [])})
        return bids, asks


async def read_positions(account_api: lighter.AccountApi, account_index: int) -> dict[int, Decimal]:
    """Signed positions (long > 0) by market index; needs no key."""
    accounts = await account_api.account(by="index", value=str(account_index))
    if not accounts.accounts:
        raise LookupError(f"venue has no account {account_index}")
    result: dict[int, Decimal] = {}
    for p in accounts.accounts[0].positions or []:
        size = Decimal(p.position)
        result[int(p.market_id)] = -size if int(p.sign) < 0 else size
    return result


async def public_positions(base_url: str, account_indexes: list[int], budget: RequestBudget | None = None,
                           process: str = "cli") -> dict[int, dict[int, Decimal]]:
    """Positions of several accounts without any key (for the demo summary), each read counted
    in `budget` as READ when one is given."""
    api_client = lighter.ApiClient(configuration=lighter.Configuration(host=base_url))
    try:
        api = lighter.AccountApi(api_client)
        positions = {}
        for index in account_indexes:
            if budget is not None:
                await budget.acquire("account", Priority.READ, process)
            positions[index] = await read_positions(api, index)
        return positions
    finally:
        await api_client.close()


def fill_trades_of_order(trades: list[dict[str, Any]], order_index: int) -> list[dict[str, Any]]:
    """The trades in which `order_index` took part (either side)."""
    return [t for t in trades if order_index in (int(t.get("ask_id") or 0), int(t.get("bid_id") or 0))]
