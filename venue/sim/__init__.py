"""A local exchange that speaks Lighter's REST + WebSocket protocol (paper mode, tests, benchmarks).

Modules, one job each:
  config.py   the `sim:` config section, validated (SimConfig, parse_sim_config)
  txcodec.py  parse signed tx_info JSON into typed txs; TxRejected (Lighter error codes)
  engine.py   pure deterministic matching engine + synthetic market (no I/O, injected clock)
  units.py    scaled-integer <-> decimal-string conversions
  views.py    Lighter-shaped JSON bodies (Order, Trade, DetailedAccount, OrderBookDetail, ...)
  faults.py   the seeded fault plan for sendTx (incl. late execution, definite rejects)
  tiers.py    Lighter's account tiers: request limits, endpoint weights, speed bumps
  ratelimit.py  rolling-minute request buckets (per L1 address / per client IP), pure
  auth.py     auth tokens as the simulator reads them
  stream.py   the /stream WebSocket hub: account_all, order_book, account_all_orders and
              account_orders (auth token), nested error frames, 200 messages/min and 100
              subscriptions per connection, drop/pause faults
  server.py   aiohttp app on one loopback port; `python -m venue.sim` entry (main)
  harness.py  start_sim(...) -> SimProcess for tests/demo/benchmarks (subprocess)

Admin API (JSON): GET/POST /admin/faults, POST /admin/ws/drop, POST /admin/ws/pause
{"paused": bool}, POST /admin/market {"random_walk", "taker_flow", "market_id", "mid", "active"},
POST /admin/fill {"account_index", "market_id", "client_order_index"|"order_index", "sizes"[, "one_frame"][, "delay_ms"]},
GET /admin/orders_log[?account_index=] (each entry: ts_ms, and ts_us = when the request arrived),
GET /admin/state, GET /admin/trades[?account_index=], GET /admin/orders?account_index=[&market_id=] (active orders),
POST /admin/register_key {"account_index", "api_key_index", "public_key"[, "master", "collateral"]},
GET /admin/stats (requests / weight / 429s per account or IP and endpoint, each bucket's rolling
minute, txs taken / executed / failed / late / expired), GET /admin/tier,
POST /admin/tier {"account_index", "tier"} (the whole L1 address switches).
Orders log entries also say what became of each taken tx: tx_status pending / executed / failed,
tx_code, late, executed_at_ms. None of /admin/* counts against a request limit.
"""
