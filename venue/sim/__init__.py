"""A local exchange that speaks Lighter's REST + WebSocket protocol (paper mode, tests, benchmarks).

Modules, one job each:
  config.py   the `sim:` config section, validated (SimConfig, parse_sim_config)
  txcodec.py  parse signed tx_info JSON into typed txs; TxRejected (Lighter error codes)
  engine.py   pure deterministic matching engine + synthetic market (no I/O, injected clock)
  units.py    scaled-integer <-> decimal-string conversions
  views.py    Lighter-shaped JSON bodies (Order, Trade, DetailedAccount, OrderBookDetail, ...)
  faults.py   the seeded fault plan for sendTx
  stream.py   the /stream WebSocket hub (account_all, order_book, drop/pause faults)
  server.py   aiohttp app on one loopback port; `python -m venue.sim` entry (main)
  harness.py  start_sim(...) -> SimProcess for tests/demo/benchmarks (subprocess)

Admin API (JSON): GET/POST /admin/faults, POST /admin/ws/drop, POST /admin/ws/pause
{"paused": bool}, POST /admin/market {"random_walk", "taker_flow", "market_id", "mid"},
POST /admin/fill {"account_index", "market_id", "client_order_index"|"order_index", "sizes"[, "one_frame"][, "delay_ms"]},
GET /admin/orders_log[?account_index=] (each entry: ts_ms, and ts_us = when the request arrived),
GET /admin/state, GET /admin/trades[?account_index=],
POST /admin/register_key {"account_index", "api_key_index", "public_key"[, "master", "collateral"]}.
"""
