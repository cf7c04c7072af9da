"""One Lighter account over the SDK: send orders, read orders, positions, trades and the book.

Create it inside the process and event loop that use it (the SDK's aiohttp session is bound
to its loop and the Go signer must not cross a fork). Thin: decisions live in hedge/.
"""
from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp
import lighter

from hedge.config import AccountConfig
from hedge.money import MarketSpec
from venue import errors
from venue.errors import SendOutcome

log = logging.getLogger("venue.client")

ACTIVE_STATUSES = {"in-progress", "pending", "open"}
AUTH_TOKEN_TTL_S = 480  # the SDK's tokens live 10 minutes; renew well before


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

    def __repr__(self) -> str:  # the signed payload stays out of logs
        return f"SignedTx(client_order_index={self.client_order_index}, error={self.error!r})"


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
    def __init__(self, signer: lighter.SignerClient, account: AccountConfig, send_timeout_s: float):
        self.signer = signer
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

    @classmethod
    async def open(cls, base_url: str, account: AccountConfig, private_key: str,
                   chain_id: int | None = None, send_timeout_s: float = 10.0) -> "VenueClient":
        signer = lighter.SignerClient(url=base_url, account_index=account.account_index,
                                      api_private_keys={account.api_key_index: private_key},
                                      chain_id=chain_id)
        return cls(signer, account, send_timeout_s)

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

    # ---- metadata -------------------------------------------------------------------------

    async def market_spec(self, market_index: int) -> MarketSpec:
        spec = self._specs.get(market_index)
        if spec is None:
            try:
                details = await self.order_api.order_book_details(market_id=market_index)
            except lighter.ApiException as exc:
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
                          price: Decimal, post_only: bool, reduce_only: bool = False) -> SendOutcome:
        tif = (lighter.SignerClient.ORDER_TIME_IN_FORCE_POST_ONLY if post_only
               else lighter.SignerClient.ORDER_TIME_IN_FORCE_GOOD_TILL_TIME)
        return await self._send(self.signer.create_order(
            market_index=spec.market_index, client_order_index=client_order_index,
            base_amount=spec.base_to_int(base), price=spec.price_to_int(price), is_ask=is_ask,
            order_type=lighter.SignerClient.ORDER_TYPE_LIMIT, time_in_force=tif, reduce_only=reduce_only))

    async def place_market(self, spec: MarketSpec, client_order_index: int, is_ask: bool, base: Decimal,
                           worst_price_int: int, reduce_only: bool = False) -> SendOutcome:
        return await self.send_signed(await self.sign_market(spec, client_order_index, is_ask, base,
                                                             worst_price_int, reduce_only))

    async def sign_market(self, spec: MarketSpec, client_order_index: int, is_ask: bool, base: Decimal,
                          worst_price_int: int, reduce_only: bool = False) -> "SignedTx":
        """Sign a market order without sending it: the next nonce is taken now; hand the result to
        exactly one of send_signed() or discard(), before signing anything else.

        Self-trade prevention across the master account: never trade against our own resting
        maker order; the resting order expires instead.
        """
        _, nonce = await self.signer.nonce_manager.async_next_nonce(self.api_key_index)
        tx_type, tx_info, _tx_hash, err = self.signer.sign_create_order(
            spec.market_index, client_order_index, spec.base_to_int(base), worst_price_int, int(is_ask),
            lighter.SignerClient.ORDER_TYPE_MARKET, lighter.SignerClient.ORDER_TIME_IN_FORCE_IMMEDIATE_OR_CANCEL,
            reduce_only, lighter.SignerClient.NIL_TRIGGER_PRICE, lighter.SignerClient.DEFAULT_IOC_EXPIRY,
            self_trade_behavior_mode=lighter.SignerClient.SELF_TRADE_BEHAVIOR_EXPIRE_MAKER,
            self_trade_equality_mode=lighter.SignerClient.SELF_TRADE_EQUALITY_MASTER_ACCOUNT_INDEX,
            nonce=nonce, api_key_index=self.api_key_index)
        return SignedTx(client_order_index, tx_type, tx_info, err)

    def discard(self, signed: "SignedTx") -> None:
        """A signed order that will never be sent gives its nonce back."""
        if signed.error is None:
            self.signer.nonce_manager.acknowledge_failure(self.api_key_index)

    async def send_signed(self, signed: "SignedTx") -> SendOutcome:
        """POST a signed tx to sendTx on the SDK's kept-alive session.

        The same request the SDK's send_tx makes (form fields tx_type and tx_info), without its
        generated client's per-call validation and serialisation: about 0.8 ms less between the
        signature and the wire on this machine. Nonce rules as the SDK's: a definite reject gives
        the nonce back; anything else not accepted resyncs it from the venue.
        """
        if signed.error is not None:
            self.discard(signed)
            return errors.classify_sdk_error(str(signed.error))
        session = self._sendtx_session()
        rest = self.signer.api_client.rest_client
        try:
            async with asyncio.timeout(self.send_timeout_s):
                async with session.post(
                        self._send_tx_url, data={"tx_type": str(signed.tx_type), "tx_info": signed.tx_info},
                        headers={"Accept": "application/json"}, proxy=self._tx_proxy,
                        proxy_headers=rest.proxy_headers) as resp:
                    outcome = errors.classify_response(resp.status, await resp.text())
        except _TRANSPORT_ERRORS as exc:
            outcome = _transport_outcome(exc)
        if outcome.accepted:
            return outcome
        if outcome.kind == errors.REJECTED:
            self.discard(signed)
        else:
            await self.resync_nonce()
        return outcome

    async def cancel(self, market_index: int, order_index: int) -> SendOutcome:
        return await self._send(self.signer.cancel_order(market_index=market_index, order_index=order_index))

    async def _send(self, call) -> SendOutcome:
        try:
            _tx, resp, err = await asyncio.wait_for(call, timeout=self.send_timeout_s)
        except lighter.ApiException as exc:
            outcome = errors.classify_http_status(exc.status, str(exc.body or exc.reason or ""))
        except _TRANSPORT_ERRORS as exc:
            outcome = _transport_outcome(exc)
        else:
            if err is not None:
                return errors.classify_sdk_error(str(err))
            outcome = errors.classify_code(int(resp.code), str(resp.message or ""))
            if outcome.accepted:
                return SendOutcome(errors.ACCEPTED, 200, str(resp.message or ""), str(resp.tx_hash))
            return outcome
        if outcome.kind in (errors.IN_DOUBT, errors.RETRYABLE):
            # The SDK does not roll its nonce back on these: resync so the next tx is not refused.
            await self.resync_nonce()
        return outcome

    async def resync_nonce(self) -> None:
        try:
            await self.signer.nonce_manager.async_hard_refresh_nonce(self.api_key_index)
        except Exception as exc:  # the next send resyncs again on "invalid nonce"
            log.warning("event=nonce.resync_failed account=%s error=%r", self.account_index, exc)

    # ---- reading --------------------------------------------------------------------------

    def _auth(self) -> str:
        now = time.monotonic()
        if self._token is None or now - self._token[1] > AUTH_TOKEN_TTL_S:
            token, err = self.signer.create_auth_token_with_expiry(api_key_index=self.api_key_index)
            if err is not None:
                raise RuntimeError(f"cannot create auth token: {err}")
            self._token = (token, now)
        return self._token[0]

    async def order_by_client_index(self, client_order_index: int) -> OrderView | None:
        orders = await self.order_api.account_orders(
            authorization=self._auth(), client_order_indexes=str(client_order_index),
            account_index=self.account_index)
        matching = [OrderView.from_model(o) for o in (orders.orders or [])
                    if int(o.client_order_index) == client_order_index]
        return max(matching, key=lambda o: o.order_index) if matching else None

    async def wait_order_final(self, client_order_index: int, timeout_s: float) -> OrderView | None:
        """A sent order's final state (a market order settles after the venue's taker delay).

        Bounded: returns the last state seen (maybe still active) or None if never found.
        """
        deadline = time.monotonic() + timeout_s
        delay_s = 0.005
        order = None
        while True:
            order = await self.order_by_client_index(client_order_index)
            if (order is not None and order.is_final) or time.monotonic() >= deadline:
                return order
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 0.2)

    async def active_orders(self, market_index: int) -> list[OrderView]:
        orders = await self.order_api.account_active_orders(
            account_index=self.account_index, market_id=market_index, authorization=self._auth())
        return [OrderView.from_model(o) for o in (orders.orders or [])]

    async def inactive_orders(self, market_index: int, limit: int = 100) -> list[OrderView]:
        """Filled and cancelled orders, newest first."""
        orders = await self.order_api.account_inactive_orders(
            account_index=self.account_index, limit=limit, market_id=market_index, authorization=self._auth())
        return [OrderView.from_model(o) for o in (orders.orders or [])]

    async def position(self, market_index: int) -> Decimal:
        """Signed position (long > 0) on a market; 0 when the account holds none."""
        return (await self.positions()).get(market_index, Decimal(0))

    async def positions(self, account_index: int | None = None) -> dict[int, Decimal]:
        """Signed positions by market of this account, or of another (account data is public)."""
        return await read_positions(self.account_api, self.account_index if account_index is None else account_index)

    async def trades(self, market_index: int | None, limit: int = 100) -> list[dict[str, Any]]:
        """This account's most recent trades, oldest first, as plain dicts (the stream's shape)."""
        kwargs: dict[str, Any] = {"sort_by": "trade_id", "sort_dir": "desc", "limit": limit,
                                  "account_index": self.account_index, "authorization": self._auth()}
        if market_index is not None:
            kwargs["market_id"] = market_index
        resp = await self.order_api.trades(**kwargs)
        rows = [t.to_dict() for t in (resp.trades or [])]
        return sorted(rows, key=lambda t: int(t["trade_id"]))

    async def book_prices(self, market_index: int, limit: int = 50) -> tuple[list[Decimal], list[Decimal]]:
        """Distinct bid prices (best first, descending) and ask prices (best first, ascending)."""
        book = await self.order_api.order_book_orders(market_id=market_index, limit=limit)
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


async def public_positions(base_url: str, account_indexes: list[int]) -> dict[int, dict[int, Decimal]]:
    """Positions of several accounts without any key (for status and the demo summary)."""
    api_client = lighter.ApiClient(configuration=lighter.Configuration(host=base_url))
    try:
        api = lighter.AccountApi(api_client)
        return {index: await read_positions(api, index) for index in account_indexes}
    finally:
        await api_client.close()


def fill_trades_of_order(trades: list[dict[str, Any]], order_index: int) -> list[dict[str, Any]]:
    """The trades in which `order_index` took part (either side)."""
    return [t for t in trades if order_index in (int(t.get("ask_id") or 0), int(t.get("bid_id") or 0))]
