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


def split_hedge(unhedged_signed: Decimal, spec: MarketSpec) -> HedgeSplit:
    """Round toward zero to the size step; below min_base_amount everything stays dust."""
    orderable = spec.floor_base(unhedged_signed)
    if not spec.is_orderable(orderable):
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
    """Open long when flat, close the whole long when long, `depth` levels from the touch.

    bid_prices are best-first (descending), ask_prices best-first (ascending). Returns None
    when the needed side of the book is empty (nothing sensible to quote against).
    A short position of A is never expected; it is closed like a long (buy it back).
    A long below min_base_amount cannot be closed (the venue refuses the size): add to it
    instead, and close the whole position next time.
    """
    if position == 0 or 0 < position < spec.min_base_amount:
        side, size, reduce_only = BUY, quantity, False
    elif position > 0:
        side, size, reduce_only = SELL, position, True
    else:
        side, size, reduce_only = BUY, -position, True
    levels = bid_prices if side == BUY else ask_prices
    if not levels:
        return None
    price = levels[min(depth, len(levels)) - 1]
    return Quote(side=side, base_amount=spec.floor_base(size), price=price, reduce_only=reduce_only)


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
        except (KeyError, TypeError, ValueError):
            return None


def speculative_split(hint: LedgerHint | None, fills_seen: int | None, spec: MarketSpec) -> HedgeSplit | None:
    """The hedge to sign while the ledger is still being read back, or None to read it first.

    The split the hint's ledger implies, when the hint is likely still current: no leg was in
    flight, the market has a leg sequence, and this worker has not yet read a ledger counting this
    fill (`fills_seen`: the fill count of the last ledger it read; a fill it has seen was hedged
    together with earlier ones, so its own task finds nothing left). Sending it is conditional: the
    leg is opened only if the ledger still equals the hint (compare-and-set), which makes the
    decision exactly the one split_hedge takes on the ledger read back.
    """
    if hint is None or hint.pending_legs or hint.leg_seq is None:
        return None
    if fills_seen is not None and hint.fills <= fills_seen:
        return None
    split = split_hedge(spec.base_from_int(hint.a_filled - hint.hedged), spec)
    return split if split.order_signed != 0 else None
