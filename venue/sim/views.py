"""JSON bodies in Lighter's REST/WS shapes, built from engine state.

Every required field of both the official OpenAPI spec and lighter-sdk 1.1.8's models is
present with the right JSON type; amounts are strings with exactly the market's decimals.
Where the spec and the SDK differ (e.g. Trade.taker_fee is required by the spec, optional
in the SDK; DetailedAccount.account_trading_mode/pending_unlocks/approved_integrators
are required by the spec only) the union is emitted.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from .engine import Engine, MarketState, Order, Position
from .units import fmt_units, fmt_usdc, units_to_decimal

CREATED_AT_MS = 1_700_000_000_000


def order_json(engine: Engine, order: Order) -> dict[str, Any]:
    cfg = engine.markets[order.market_id].cfg
    filled_quote = units_to_decimal(order.filled_quote_units, cfg.size_decimals + cfg.price_decimals)
    return {
        "order_index": order.order_index, "client_order_index": order.client_order_index,
        "order_id": str(order.order_index), "client_order_id": str(order.client_order_index),
        "market_index": order.market_id, "owner_account_index": order.account_index,
        "initial_base_amount": fmt_units(order.initial_base, cfg.size_decimals),
        "price": fmt_units(order.price, cfg.price_decimals),
        "nonce": order.nonce,
        "remaining_base_amount": fmt_units(order.remaining if order.is_active else 0,
                                           cfg.size_decimals),
        "is_ask": order.is_ask, "base_size": order.initial_base, "base_price": order.price,
        "filled_base_amount": fmt_units(order.filled_base, cfg.size_decimals),
        "filled_quote_amount": fmt_usdc(filled_quote),
        "side": "sell" if order.is_ask else "buy",
        "type": order.order_type, "time_in_force": order.time_in_force,
        "reduce_only": order.reduce_only, "trigger_price": fmt_units(0, cfg.price_decimals),
        "order_expiry": order.order_expiry_ms, "status": order.status, "trigger_status": "na",
        "trigger_time": 0, "parent_order_index": 0, "parent_order_id": "0",
        "to_trigger_order_id_0": "0", "to_trigger_order_id_1": "0", "to_cancel_order_id_0": "0",
        "block_height": order.block_height, "timestamp": order.created_at_ms // 1000,
        "created_at": order.created_at_ms, "updated_at": order.updated_at_ms,
        "transaction_time": order.updated_at_ms * 1000,
        "integrator_fee_collector_index": "0", "integrator_maker_fee": "0",
        "integrator_taker_fee": "0", "order_flags": 0, "order_version": 0,
        "market_symbol": cfg.symbol, "market_kind": "perps",
    }


def simple_order_json(engine: Engine, order: Order) -> dict[str, Any]:
    cfg = engine.markets[order.market_id].cfg
    return {
        "order_index": order.order_index, "order_id": str(order.order_index),
        "owner_account_index": order.account_index,
        "initial_base_amount": fmt_units(order.initial_base, cfg.size_decimals),
        "remaining_base_amount": fmt_units(order.remaining, cfg.size_decimals),
        "price": fmt_units(order.price, cfg.price_decimals),
        "order_expiry": order.order_expiry_ms, "transaction_time": order.created_at_ms * 1000,
    }


def position_json(engine: Engine, account_index: int, market_id: int) -> dict[str, Any]:
    market = engine.markets[market_id]
    cfg = market.cfg
    acct = engine.accounts[account_index]
    pos = acct.positions.get(market_id, Position())
    size = units_to_decimal(abs(pos.base), cfg.size_decimals)
    mid = units_to_decimal(market.mid, cfg.price_decimals)
    avg = (pos.entry_quote / size) if pos.base else Decimal(0)
    value = size * mid
    upnl = (value - pos.entry_quote) * (1 if pos.base > 0 else -1) if pos.base else Decimal(0)
    open_orders = sum(1 for o in acct.active.values() if o.market_id == market_id)
    imf = engine.config.initial_margin_fraction * 100
    return {
        "market_id": market_id, "symbol": cfg.symbol,
        "initial_margin_fraction": f"{imf:.2f}",
        "open_order_count": open_orders, "pending_order_count": 0,
        "position_tied_order_count": 0,
        "sign": -1 if pos.base < 0 else 1,
        "position": fmt_units(abs(pos.base), cfg.size_decimals),
        "avg_entry_price": str(avg.quantize(Decimal(1).scaleb(-cfg.price_decimals))),
        "position_value": fmt_usdc(value), "unrealized_pnl": fmt_usdc(upnl),
        "realized_pnl": fmt_usdc(pos.realized_pnl), "liquidation_price": "0",
        "total_funding_paid_out": "0.000000", "margin_mode": 0,
        "allocated_margin": "0.000000", "total_discount": "0.000000", "margin_set_flag": 0,
    }


def detailed_account_json(engine: Engine, account_index: int) -> dict[str, Any]:
    acct = engine.accounts[account_index]
    upnl = engine._unrealized_pnl(acct)  # noqa: SLF001 - same package
    positions = [position_json(engine, account_index, m) for m in sorted(engine.markets)]
    collateral = fmt_usdc(acct.collateral)
    total = fmt_usdc(acct.collateral + upnl)
    return {
        "code": 200, "account_type": 0, "index": acct.index,
        "l1_address": acct.l1_address, "cancel_all_time": acct.cancel_all_at_ms, "total_order_count": acct.total_order_count,
        "total_isolated_order_count": 0, "pending_order_count": 0,
        "available_balance": collateral, "status": 1, "collateral": collateral,
        "transaction_time": engine.last_tick_ms * 1000, "account_trading_mode": 0,
        "account_index": acct.index, "name": f"sim-{acct.index}", "description": "",
        "can_invite": False, "referral_points_percentage": "0", "created_at": CREATED_AT_MS,
        "positions": positions,
        "assets": [{"symbol": "USDC", "asset_id": 3, "balance": collateral,
                    "locked_balance": "0.000000", "margin_balance": collateral,
                    "margin_mode": "enabled", "multiplier": "1"}],
        "total_asset_value": total, "cross_asset_value": total,
        "pool_info": {"status": 0, "operator_fee": "0", "min_operator_share_rate": "0",
                      "total_shares": 0, "operator_shares": 0, "annual_percentage_yield": 0,
                      "sharpe_ratio": 0, "daily_returns": [], "share_prices": [],
                      "strategies": []},
        "shares": [], "pending_unlocks": [], "approved_integrators": [],
        "can_rfq": False, "cross_initial_margin_requirement": "0.000000",
        "cross_maintenance_margin_requirement": "0.000000", "can_rfq_market_ids": [],
        "metadata": {"color": ""}, "agent_enabled": False, "master_account_index": acct.master,
    }


def _order_book_common(market: MarketState) -> dict[str, Any]:
    cfg = market.cfg
    return {
        "symbol": cfg.symbol, "market_id": cfg.market_id, "market_type": "perp",
        "base_asset_id": cfg.market_id + 100, "quote_asset_id": 3,
        "status": "active" if market.active else "inactive",
        "taker_fee": "0.0000", "maker_fee": "0.0000", "liquidation_fee": "1.0000",
        "min_base_amount": str(cfg.min_base_amount), "min_quote_amount": str(cfg.min_quote_amount),
        "order_quote_limit": "", "supported_size_decimals": cfg.size_decimals,
        "supported_price_decimals": cfg.price_decimals, "supported_quote_decimals": 6,
        "is_maker_fee_enabled": False, "is_taker_fee_enabled": False,
        "created_at": "2024-01-01T00:00:00Z", "multiplier": "1", "start_timestamp": 0,
        "end_timestamp": 0, "settlement_type": 0, "settlement_price": 0, "settlement_cap": 0,
        "outcome": 0, "default_price": 0, "operator_account_index": 0, "is_frozen": False,
    }


def order_book_json(engine: Engine, market: MarketState) -> dict[str, Any]:
    return dict(_order_book_common(market), open_interest=_open_interest(engine, market))


def _open_interest(engine: Engine, market: MarketState) -> str:
    longs = sum(max(a.positions.get(market.cfg.market_id, Position()).base, 0)
                for a in engine.accounts.values())
    return fmt_units(longs, market.cfg.size_decimals)


def order_book_detail_json(engine: Engine, market: MarketState) -> dict[str, Any]:
    cfg = market.cfg
    last = float(units_to_decimal(market.last_trade_price or market.mid, cfg.price_decimals))
    imf = int(engine.config.initial_margin_fraction * 10_000)
    # Spec types last_trade_price/volumes/open_interest as JSON numbers here (display only).
    return dict(
        _order_book_common(market),
        size_decimals=cfg.size_decimals, price_decimals=cfg.price_decimals,
        quote_multiplier=1, default_initial_margin_fraction=imf, min_initial_margin_fraction=imf,
        maintenance_margin_fraction=imf // 2, closeout_margin_fraction=imf // 3,
        last_trade_price=last, daily_trades_count=market.daily_trades_count,
        daily_base_token_volume=float(units_to_decimal(market.daily_base_volume, cfg.size_decimals)),
        daily_quote_token_volume=0.0, daily_price_low=last, daily_price_high=last,
        daily_price_change=0.0,
        open_interest=float(Decimal(_open_interest(engine, market))), daily_chart={},
        market_config={"market_margin_mode": 0, "insurance_fund_account_index": 0,
                       "liquidation_mode": 0, "force_reduce_only": False, "trading_hours": "",
                       "hidden": False, "rfq_enabled": False,
                       "funding_fee_discounts_enabled": False},
        strategy_index=0, funding_clamp_small="0", funding_clamp_big="0",
        base_interest_rate="0", mark_price=fmt_units(market.mid, cfg.price_decimals),
        index_price=fmt_units(market.mid, cfg.price_decimals), market_flags=0,
        funding_premium_multiplier=0,
    )


def levels_json(levels: list[tuple[int, int]], market: MarketState) -> list[dict[str, str]]:
    cfg = market.cfg
    return [{"price": fmt_units(p, cfg.price_decimals), "size": fmt_units(s, cfg.size_decimals)}
            for p, s in levels]


def admin_state_json(engine: Engine) -> dict[str, Any]:
    accounts = {}
    for index, acct in sorted(engine.accounts.items()):
        per_market = {}
        for market_id in sorted(engine.markets):
            cfg = engine.markets[market_id].cfg
            pos = acct.positions.get(market_id, Position())
            size = units_to_decimal(abs(pos.base), cfg.size_decimals)
            avg = (pos.entry_quote / size) if pos.base else Decimal(0)
            per_market[str(market_id)] = {
                "position": fmt_units(pos.base, cfg.size_decimals),
                "avg_entry_price": str(avg.quantize(Decimal(1).scaleb(-cfg.price_decimals))),
                "realized_pnl": fmt_usdc(pos.realized_pnl),
                "active_orders": sum(1 for o in acct.active.values() if o.market_id == market_id),
            }
        accounts[str(index)] = {"master": acct.master, "synthetic": acct.synthetic, "tier": acct.tier,
                                "cancel_all_at_ms": acct.cancel_all_at_ms,
                                "collateral": fmt_usdc(acct.collateral),
                                "next_nonce": {str(k): v for k, v in acct.next_nonce.items()},
                                "markets": per_market}
    markets = {}
    for market_id, market in sorted(engine.markets.items()):
        cfg = market.cfg
        markets[str(market_id)] = {
            "symbol": cfg.symbol, "mid": fmt_units(market.mid, cfg.price_decimals),
            "random_walk": market.random_walk, "taker_flow": market.taker_flow, "active": market.active,
            "position_sum": fmt_units(engine.position_sums()[market_id], cfg.size_decimals),
        }
    return {"accounts": accounts, "markets": markets, "trade_count": len(engine.trades),
            "block_height": engine.block_height}
