"""Hedge decisions: which side B takes, how much, at what worst price, under which client index."""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from hedge.fill import BUY, SELL
from hedge.money import MarketSpec

MAX_CLIENT_ORDER_INDEX = 2**48 - 1
BPS = Decimal(10_000)


LEG_SEQ_EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def leg_seq_start(now_ms: int) -> int:
    """Where a market's leg sequence starts when the ledger has none (first run, or Redis lost its
    data): milliseconds since 2026-01-01. Every earlier leg was numbered from an earlier start plus
    one per leg, so a restart reuses no number unless legs averaged more than one per millisecond.
    Fits the 2**40 legs of a market's range until about 2060.
    """
    return now_ms - LEG_SEQ_EPOCH_MS


def leg_client_order_index(market_index: int, leg_no: int) -> int:
    """B's client_order_index for hedge leg `leg_no` (the market's ledger sequence number).

    Deterministic, so a leg left in doubt is found at the venue by its index; each market has its
    own range of 2**40 legs, so a lookup never finds another market's order.
    """
    if not 0 <= market_index < 2**8 or not 1 <= leg_no < 2**40:
        raise ValueError(f"leg {leg_no} of market {market_index} is outside the client order index space")
    return market_index * 2**40 + leg_no


def worst_price_int(fill_price: Decimal, b_is_ask: bool, max_slippage_bps: Decimal, spec: MarketSpec) -> int:
    """Worst acceptable price for B's market order, never beyond max_slippage_bps of the fill.

    Rounded toward the fill price (up for a sell, down for a buy) so the bound holds exactly.
    """
    if b_is_ask:
        bound = fill_price * (1 - max_slippage_bps / BPS)
        return max(1, spec.price_to_int(bound, rounding=ROUND_CEILING))
    bound = fill_price * (1 + max_slippage_bps / BPS)
    return spec.price_to_int(bound, rounding=ROUND_FLOOR)


@dataclass(frozen=True)
class HedgeSplit:
    """What B can order now for an A-side signed amount, and the dust carried to the next hedge."""

    order_signed: Decimal  # in A's direction; B trades the opposite
    dust_signed: Decimal

    @property
    def b_is_ask(self) -> bool:
        # A bought (+) -> B sells; A sold (-) -> B buys.
        return self.order_signed > 0

    @property
    def b_side(self) -> str:
        return SELL if self.b_is_ask else BUY


def split_hedge(unhedged_signed: Decimal, spec: MarketSpec, worst_price: Decimal | None = None) -> HedgeSplit:
    """Round toward zero to the size step; below min_base_amount, or (given B's worst price) below
    min_quote_amount at that price, everything stays dust.

    The worst price is the bound B signs: the venue's notional price for a market order is not
    documented, and no fill can be worse, so an order meeting min_quote_amount there is accepted.
    """
    orderable = spec.floor_base(unhedged_signed)
    if not spec.is_orderable(orderable, worst_price):
        return HedgeSplit(Decimal(0), unhedged_signed)
    return HedgeSplit(orderable, unhedged_signed - orderable)


@dataclass(frozen=True)
class Quote:
    """The maker's next resting order."""

    side: str
    base_amount: Decimal
    price: Decimal
    reduce_only: bool


def next_quote(position: Decimal, bid_prices: list[Decimal], ask_prices: list[Decimal],
               depth: int, quantity: Decimal, spec: MarketSpec) -> Quote | None:
    """Open long when flat, close the whole position when there is one, `depth` levels from the touch.

    bid_prices are best-first (descending), ask_prices best-first (ascending). Returns None
    when the needed side of the book is empty (nothing sensible to quote against).
    A short position of A is never expected; it is closed like a long (buy it back).

    A closing (reduce-only) quote always meets both venue minimums at its own price. A position too
    small to close (below min_base_amount, or below min_quote_amount at the closing price) is
    added to instead: an opening buy of `quantity` (which also covers a small short), and the
    whole position is closed next time.
    The opening quote is returned as configured even when `quantity` at its price is below a
    minimum (the price fell since start-up): the caller checks spec.is_orderable(base, price) and
    pauses rather than trading a size nobody configured.
    """
    if position != 0:
        size = spec.floor_base(abs(position))
        side, levels = (SELL, ask_prices) if position > 0 else (BUY, bid_prices)
        if spec.is_orderable(size):  # big enough by size: the notional depends on the price
            if not levels:
                return None
            price = _at_depth(levels, depth)
            if spec.is_orderable(size, price):
                return Quote(side=side, base_amount=size, price=price, reduce_only=True)
    if not bid_prices:
        return None
    return Quote(side=BUY, base_amount=spec.floor_base(quantity), price=_at_depth(bid_prices, depth),
                 reduce_only=False)


def _at_depth(levels: list[Decimal], depth: int) -> Decimal:
    """The depth-th level from the touch, or the farthest there is."""
    return levels[min(depth, len(levels)) - 1]


def quote_size_problem(quantity: Decimal, price: Decimal, spec: MarketSpec, field: str | None = None) -> str | None:
    """None when an order of `quantity` at `price` meets both venue minimums, else a one-line
    message naming the field, the price, the notional, the minimums and the smallest size that works."""
    if spec.is_orderable(quantity, price):
        return None
    field = field or f"markets.{spec.symbol}.quantity"
    notional = abs(quantity) * price
    min_base = f"min_base_amount {spec.min_base_amount} {spec.symbol}"
    min_quote = f"min_quote_amount {_plain(spec.min_quote_amount)} USDC"
    if abs(quantity) < spec.min_base_amount and notional < spec.min_quote_amount:
        below = f"below the venue's {min_base} and {min_quote}"
    elif abs(quantity) < spec.min_base_amount:
        below = f"below the venue's {min_base} (and {min_quote})"
    else:
        below = f"below the venue's {min_quote} (and {min_base})"
    return (f"{field} {quantity} at price {price} is {_plain(notional)} USDC, {below}; "
            f"use at least {spec.min_orderable_base(price)}")


def _plain(amount: Decimal) -> str:
    """'9.5' for 9.500000, '10' for 10.000000: no exponent, no trailing zeros."""
    text = f"{amount:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


@dataclass(frozen=True)
class LedgerHint:
    """A market's ledger as the maker read it in the same step that counted a fill; travels in the
    hedge task's message so the worker can sign before reading the ledger back (see speculative_split)."""

    fills: int           # fills counted on the market so far (this one included); only ever grows
    a_filled: int        # the ledger's a_filled, venue units
    hedged: int
    pending_legs: int
    leg_seq: int | None  # the market's last leg number; None before the first leg

    def to_message(self) -> dict[str, int | None]:
        return {"fills": self.fills, "a_filled": self.a_filled, "hedged": self.hedged,
                "pending_legs": self.pending_legs, "leg_seq": self.leg_seq}

    @classmethod
    def from_message(cls, msg: object) -> "LedgerHint | None":
        """None for anything but a well-formed hint: a hint only ever speeds a hedge up."""
        if not isinstance(msg, dict):
            return None
        try:
            seq = msg.get("leg_seq")
            return cls(fills=int(msg["fills"]), a_filled=int(msg["a_filled"]), hedged=int(msg["hedged"]),
                       pending_legs=int(msg["pending_legs"]), leg_seq=None if seq is None else int(seq))
        except (KeyError, TypeError, ValueError, OverflowError):   # inf or nan from a forged message
            return None


def speculative_split(hint: LedgerHint | None, fills_seen: int | None, spec: MarketSpec,
                      worst_price: Decimal | None = None) -> HedgeSplit | None:
    """The hedge to sign while the ledger is still being read back, or None to read it first.

    The split the hint's ledger implies, when the hint is likely still current: no leg was in
    flight, the market has a leg sequence, and this worker has not yet read a ledger counting this
    fill (`fills_seen`: the fill count of the last ledger it read; a fill it has seen was hedged
    together with earlier ones, so its own task finds nothing left). Sending it is conditional: the
    leg is opened only if the ledger still equals the hint (compare-and-set), which makes the
    decision exactly the one split_hedge takes on the ledger read back (given the same worst_price).
    """
    if hint is None or hint.pending_legs or hint.leg_seq is None:
        return None
    if fills_seen is not None and hint.fills <= fills_seen:
        return None
    split = split_hedge(spec.base_from_int(hint.a_filled - hint.hedged), spec, worst_price)
    return split if split.order_signed != 0 else None


def b_position_problem(hedged: Decimal, order_signed: Decimal, max_position_base: Decimal) -> str | None:
    """Why B must not send `order_signed` (A's direction), or None: B's position as the ledger knows
    it (what its settled legs took off, opposite to A) would end beyond max_position_base - a size
    A itself can never reach, so the ledger was corrupted or the config shrank under a position."""
    after = -(hedged + order_signed)
    if abs(after) <= max_position_base:
        return None
    return (f"hedging {order_signed} would take B's position to {after}, beyond max_position_base "
            f"{max_position_base} (A never goes beyond it; check the ledger with `lighter-hedge status`, "
            f"`lighter-hedge repair`)")


def fill_bound_problem(base_amount: Decimal, max_position_base: Decimal, max_unhedged_base: Decimal) -> str | None:
    """Why a fill of A is impossible, or None: no order of A is larger than max_position_base, and
    no gap the maker hedges at start larger than max_unhedged_base."""
    bound = max(max_position_base, max_unhedged_base)
    if base_amount <= bound:
        return None
    return f"fill of {base_amount} exceeds what A can fill ({bound}: max_position_base / max_unhedged_base)"
