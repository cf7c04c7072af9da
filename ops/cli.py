"""The `lighter-hedge` command: run the processes and operate them (Click, as Celery uses)."""
from __future__ import annotations

import asyncio
import json
import os
import sys
from decimal import Decimal
from urllib.parse import urlsplit

import click

from hedge.config import Config, ConfigError
from ops import logs
from ops.settings import CONFIG_ENV, KEYS_FILE_ENV, load_config, mask_url, redis_error_line

_redis_url: str | None = None   # the Redis the running command talks to, for its error line


def _load(config_path: str | None) -> Config:
    global _redis_url
    if config_path:
        # The Celery app (celeryconfig.py) and the worker read the same file through LH_CONFIG.
        os.environ[CONFIG_ENV] = os.path.abspath(config_path)
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        sys.exit(2)
    _redis_url = cfg.redis_url
    return cfg


def _paper_keys(cfg: Config) -> None:
    """Every paper-mode command creates the throwaway keys it needs (a fresh checkout has none).
    A keys file named by $LH_KEYS_FILE (what `up` hands each program) is given, never generated into."""
    from venue.keys import ensure_paper_keys
    if os.environ.get(KEYS_FILE_ENV):
        return
    try:
        ensure_paper_keys(cfg)
    except (OSError, RuntimeError) as exc:
        click.echo(f"config error: keys_file {cfg.keys_file}: cannot create paper keys ({exc})", err=True)
        sys.exit(2)


def safe_url(url: str) -> str:
    """A URL without its password, for messages."""
    return mask_url(url)


def _redis_exit(url: str, exc: BaseException) -> None:
    """A Redis that does not answer (or refuses the login) is one line and exit 2, never a traceback."""
    click.echo(redis_error_line(url, exc), err=True)
    sys.exit(2)


def _store(cfg: Config):
    import redis
    from tasks.store import Store
    store = Store.from_url(cfg.redis_url)
    try:
        store.r.ping()
    except redis.RedisError as exc:
        _redis_exit(cfg.redis_url, exc)
    return store


def _markets(cfg: Config, market: tuple[str, ...] | str | None) -> list[str]:
    if not market:
        return list(cfg.markets)
    names = [market] if isinstance(market, str) else list(market)
    try:
        return [cfg.market(m).symbol for m in names]
    except ConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        sys.exit(2)


config_option = click.option("--config", "config_path", envvar=CONFIG_ENV, default=None,
                             help="config.yaml path (default: $LH_CONFIG or ./config.yaml)")


class _Main(click.Group):
    """Every command: a Redis error that escapes it (Redis gone mid-command) is the same one line."""

    def invoke(self, ctx: click.Context):
        import redis
        try:
            return super().invoke(ctx)
        except redis.RedisError as exc:
            _redis_exit(_redis_url or "redis://?", exc)


@click.group(cls=_Main)
def main() -> None:
    """lighter-hedge: maker on account A, hedges on account B, over Celery."""


# ---- processes ---------------------------------------------------------------------------------

@main.command("maker")
@config_option
@click.option("--market", multiple=True, help="market symbol (repeatable; default: all in config)")
@click.option("--quantity", default=None, help="override markets.<M>.quantity (one --market only)")
@click.option("--depth", type=int, default=None, help="override markets.<M>.depth (one --market only)")
@click.option("--log-level", default="INFO")
def maker_command(config_path: str | None, market: tuple[str, ...], quantity: str | None,
                  depth: int | None, log_level: str) -> None:
    """Run account A's quote loop and account stream."""
    import aiohttp
    from dataclasses import replace

    from hedge.money import AmountError, to_decimal
    cfg = _load(config_path)
    symbols = _markets(cfg, market)
    if quantity is not None or depth is not None:
        if len(symbols) != 1:
            raise click.UsageError("--quantity/--depth need exactly one --market")
        m = cfg.market(symbols[0])
        try:
            q = to_decimal(quantity, "--quantity") if quantity is not None else m.quantity
        except AmountError as exc:
            raise click.BadParameter(str(exc)) from None
        if q <= 0 or (depth is not None and depth < 1):
            raise click.BadParameter("--quantity must be > 0 and --depth >= 1")
        cfg = replace(cfg, markets={**cfg.markets, m.symbol: replace(m, quantity=q, depth=depth or m.depth)})
    _store(cfg)
    _paper_keys(cfg)
    from venue.keys import private_key, task_signing_key
    try:
        private_key(cfg, cfg.account_a)
        task_signing_key(cfg)   # the maker signs every hedge message (tasks.signing)
    except ConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        sys.exit(2)
    logs.setup(log_level)
    from maker.app import run_maker
    from tasks.store import LedgerLostError
    try:
        asyncio.run(run_maker(cfg, symbols))
    except (aiohttp.ClientConnectorError, ConnectionError) as exc:
        click.echo(f"venue error: cannot reach {cfg.base_url} ({exc})", err=True)
        sys.exit(3)
    except LookupError as exc:
        click.echo(f"venue error: {exc}", err=True)
        sys.exit(2)
    except ConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        sys.exit(2)
    except LedgerLostError as exc:
        click.echo(f"ledger lost: {exc}; A's orders were cancelled; restart the maker (supervisord does): its "
                   f"reconcile at start measures A+B at the venue", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        pass


@main.command("worker")
@config_option
@click.option("--log-level", default="INFO")
def worker_command(config_path: str | None, log_level: str) -> None:
    """Run account B's Celery worker: queue hedge.b, one process (B's nonces are sequential)."""
    cfg = _load(config_path)
    _store(cfg)
    _paper_keys(cfg)
    from venue.keys import private_key, task_signing_key
    try:
        private_key(cfg, cfg.account_b)
        task_signing_key(cfg)   # the worker refuses hedge messages not signed with it (tasks.signing)
    except ConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        sys.exit(2)
    # solo pool: tasks run in this very process, so the signer is never inherited across fork().
    os.execv(sys.executable, [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-Q", "hedge.b",
                              "-P", "solo", "-c", "1", "-E", "-n", "hedge-b@%h", "--loglevel", log_level,
                              "--without-mingle", "--without-gossip"])


@main.command("sim")
@config_option
@click.option("--host", default="127.0.0.1")
@click.option("--port", type=int, default=None, help="default: the port of lighter.base_url")
@click.option("--seed", type=int, default=None)
def sim_command(config_path: str | None, host: str, port: int | None, seed: int | None) -> None:
    """Run the local Lighter-protocol exchange (paper mode)."""
    from ops.settings import config_path as resolve
    cfg = _load(config_path)
    _paper_keys(cfg)
    port = port or urlsplit(cfg.base_url).port or 8787
    argv = ["--host", host, "--port", str(port), "--config", str(resolve(config_path))]
    if cfg.keys_file:
        argv += ["--keys-file", cfg.keys_file]
    if seed is not None:
        argv += ["--seed", str(seed)]
    from venue.sim.server import main as sim_main
    sys.exit(sim_main(argv))


# ---- operating ---------------------------------------------------------------------------------

@main.command("status")
@config_option
@click.option("--market", default=None)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per market")
@click.option("--watch", is_flag=True, help="refresh until Ctrl-C; on a terminal, one screen redrawn in place "
                                           "with changes highlighted and what to do next (ACTION)")
@click.option("--interval", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
              help="seconds between refreshes with --watch")
@click.option("--count", type=click.IntRange(min=0), default=0, help="with --watch: stop after N refreshes (0 = never)")
def status_command(config_path: str | None, market: str | None, as_json: bool, watch: bool, interval: float,
                   count: int) -> None:
    """Per market: A and B positions, net exposure, dust, in-flight and failed hedges, pause; and the
    request budget A and B share (used/limit in the rolling minute, by process, 429s seen)."""
    import time

    from ops.status import STATUS_BUDGET_WAIT_MS, VenueCache, budget_line, collect, next_action
    from venue.budget import budget_from_config
    cfg = _load(config_path)
    store = _store(cfg)
    markets = _markets(cfg, market)
    budget = budget_from_config(cfg, store.r)
    # --watch waits for the budget only for its first view, then shows the last one it could read.
    cache = VenueCache() if watch else None
    if watch and not as_json and sys.stdout.isatty():
        # A terminal: one screen redrawn in place (ops/watch.py); piped, the lines below each refresh.
        from ops import watch as watch_screen
        watch_screen.run(lambda: asyncio.run(collect(cfg, store, markets, budget, STATUS_BUDGET_WAIT_MS, cache)),
                         interval, count)
        return
    shown = 0
    try:
        while True:
            rows = asyncio.run(collect(cfg, store, markets, budget, STATUS_BUDGET_WAIT_MS, cache))
            if watch and not as_json:
                click.echo(f"-- {time.strftime('%H:%M:%S')}")
            for row in rows:
                if as_json:
                    click.echo(json.dumps(row, default=str))
                    continue
                click.echo(" ".join(f"{k}={_fmt(v)}" for k, v in row.items()
                                    if k not in ("failed_hedges", "pause_reason", "budget", "refused_messages")))
                if row["pause_reason"]:
                    click.echo(f"  paused: {row['pause_reason']}")
                for task_id, info in row["failed_hedges"].items():
                    click.echo(f"  failed: {task_id} fill_id={info.get('fill_id')} reason={info.get('reason')}")
            if rows and not as_json:
                click.echo(budget_line(rows[0]["budget"]))
                for task_id, info in store.refused().items():
                    click.echo(f"refused: {task_id} market={info.get('market') or 'unknown'} "
                               f"reason={info.get('reason')} (nothing traded; clear-refused to forget)")
                click.echo(next_action(rows))
            shown += 1
            if not watch or (count and shown >= count):
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        pass


def _fmt(value: object) -> str:
    if isinstance(value, Decimal):
        return "0" if value == 0 else str(value)
    return str(value)


@main.command("pause")
@config_option
@click.option("--market", default=None, help="default: every market")
@click.option("--reason", default="paused by operator")
def pause_command(config_path: str | None, market: str | None, reason: str) -> None:
    """Stop A from placing orders (its resting order is cancelled); survives restarts."""
    cfg = _load(config_path)
    store = _store(cfg)
    for symbol in _markets(cfg, market):
        store.pause(symbol, reason, by="operator")
        click.echo(f"market={symbol} paused reason={reason!r}")


@main.command("resume")
@config_option
@click.option("--market", default=None, help="default: every market")
@click.option("--force", is_flag=True, help="resume even with failed hedges left (they are acknowledged; A stays "
                                           "exposed until they are requeued)")
def resume_command(config_path: str | None, market: str | None, force: bool) -> None:
    """Let A trade again. Refuses while failed hedges remain: requeue them first."""
    from ops.resume import resume   # the console's Resume calls the same function
    cfg = _load(config_path)
    store = _store(cfg)
    outcomes = resume(store, _markets(cfg, market), force=force, by="cli")
    for outcome in outcomes:
        click.echo(outcome.line(), err=not outcome.resumed)
    sys.exit(0 if all(o.resumed for o in outcomes) else 1)


@main.command("requeue")
@config_option
@click.argument("task_id", required=False)
@click.option("--all-failed", is_flag=True, help="every failed hedge (of --market, or all markets)")
@click.option("--market", default=None)
@click.option("--max-slippage-bps", "max_slippage_bps", metavar="N", default=None,
              help="B's worst price from the best price on B's side of the book now +- N bps (0 < N <= 1000, like "
                   "strategy.max_slippage_bps) instead of from A's fill price; printed before it is sent")
def requeue_command(config_path: str | None, task_id: str | None, all_failed: bool, market: str | None,
                    max_slippage_bps: str | None) -> None:
    """Re-run hedges with their original fill: failed ones, or TASK_ID whatever happened to it (failed,
    revoked, lost). The same task id; a revoked one runs as <id>-r<n> (workers discard its id)."""
    from ops.requeue import RequeueError, requeue_hedges
    cfg = _load(config_path)
    store = _store(cfg)
    if bool(task_id) == all_failed:
        raise click.UsageError("give a TASK_ID or --all-failed")
    try:
        done = requeue_hedges(cfg, store, _markets(cfg, market), task_id, max_slippage_bps, echo=click.echo)
    except RequeueError as exc:
        click.echo(f"requeue error: {exc}" if exc.exit_code == 2 else str(exc), err=True)
        sys.exit(exc.exit_code)
    if not done:
        click.echo("nothing to requeue: no failed hedge with a fill this deployment can trust", err=True)
        sys.exit(1)
    for requeued in done:
        click.echo(requeued.line())


@main.command("clear-refused")
@config_option
@click.argument("task_id", required=False)
@click.option("--all", "clear_all", is_flag=True, help="every refused message")
def clear_refused_command(config_path: str | None, task_id: str | None, clear_all: bool) -> None:
    """Forget refused task messages (malformed, forged, unknown market) once looked at."""
    cfg = _load(config_path)
    store = _store(cfg)
    if bool(task_id) == clear_all:
        raise click.UsageError("give a TASK_ID or --all")
    removed = store.clear_refused(task_id)
    if not removed:
        click.echo(f"nothing to clear: {task_id} is not a refused message" if task_id else
                   "nothing to clear: no refused messages", err=True)
        sys.exit(1)
    click.echo(f"cleared {removed} refused message(s)")


@main.command("flatten")
@config_option
@click.option("--market", default=None, help="default: every market")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def flatten_command(config_path: str | None, market: str | None, yes: bool) -> None:
    """Pause, cancel A's orders and close A's and B's positions with reduce-only market orders,
    sent by the maker (A) and the worker (B) when they run: one sender per key."""
    from hedge.flatten import FlattenError
    from ops.flatten import confirm_question, flatten   # the console's Flatten calls the same
    cfg = _load(config_path)
    store = _store(cfg)
    symbols = _markets(cfg, market)
    if not yes:
        click.confirm(confirm_question(cfg, symbols), abort=True)
    try:
        ok = asyncio.run(flatten(cfg, store, symbols, click.echo))
    except (FlattenError, RuntimeError) as exc:
        click.echo(f"flatten error: {exc}", err=True)
        sys.exit(1)
    sys.exit(0 if ok else 1)


@main.command("console")
@config_option
@click.option("--log-level", default="INFO")
def console_command(config_path: str | None, log_level: str) -> None:
    """Web console on http://127.0.0.1:<console.port> with Flower's basic auth: per market its state,
    A/B/net exposure, the request budget, hedge.b and its consumer, in-flight and failed hedges, with
    Requeue (priced first), Resume and Flatten - the functions status, requeue, resume and flatten call."""
    from ops.console import ListenError, credentials, run_console
    from venue.keys import task_signing_key
    cfg = _load(config_path)
    store = _store(cfg)
    _paper_keys(cfg)
    try:
        task_signing_key(cfg)   # requeues and flatten requests are signed; the console holds no account key
        creds = credentials(cfg)
    except ConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:
        click.echo(f"console error: cannot read the basic auth password ({exc})", err=True)
        sys.exit(2)
    logs.setup(log_level)
    try:
        run_console(cfg, store, list(cfg.markets), creds)
    except ListenError as exc:
        click.echo(f"console error: {exc}", err=True)
        sys.exit(2)


@main.command("repair")
@config_option
@click.argument("market")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def repair_command(config_path: str | None, market: str, yes: bool) -> None:
    """Rebuild MARKET's ledger from the venue (a_filled = A's position, hedged = -B's) after a diff and a
    confirmation. Only while the market is paused with nothing in flight; it stays paused."""
    from ops.repair import run_repair
    cfg = _load(config_path)
    store = _store(cfg)
    sys.exit(run_repair(cfg, store, _markets(cfg, market)[0], yes))


@main.command("demo")
@config_option
@click.option("--rounds", type=int, default=2, help="open+close rounds per market before stopping")
@click.option("--max-seconds", type=int, default=100, help="stop after this long even if rounds are not done")
def demo_command(config_path: str | None, rounds: int, max_seconds: int) -> None:
    """Paper-mode demo: sim, worker, maker and Flower under supervisord; prints hedges and a summary."""
    from ops import supervise
    from ops.demo import run_demo
    cfg = _load(config_path)
    _paper_keys(cfg)
    problem = supervise.redis_problem(cfg.redis_url)
    if problem is not None and not (supervise.may_start_redis(cfg.redis_url) and supervise.nothing_listens(problem)):
        _redis_exit(cfg.redis_url, problem)
    try:
        sys.exit(run_demo(cfg, config_path, rounds, max_seconds))
    except ConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        sys.exit(2)
    except supervise.StartError as exc:   # the demo has stopped everything again
        line = str(exc)
        click.echo(line if line.startswith("redis error:") else f"demo: {line}", err=True)
        sys.exit(2 if line.startswith("redis error:") else 1)


def _supervisor_env(cfg: Config, config_path: str | None, autostart: bool) -> dict[str, str]:
    from pathlib import Path

    from ops import supervise
    from ops.settings import PROJECT_ROOT
    from ops.settings import config_path as resolve
    run_dir = Path(os.environ.get("LH_RUN_DIR", PROJECT_ROOT / "run"))
    log_dir = Path(os.environ.get("LH_LOG_DIR", PROJECT_ROOT / "logs"))
    return supervise.supervisor_env(cfg, Path(resolve(config_path)), run_dir, log_dir, autostart=autostart)


@main.command("up")
@config_option
def up_command(config_path: str | None) -> None:
    """Start everything under supervisord (the sim too in paper mode) and return once every program
    runs. Exit 2: bad config, keys or Redis, or a deployment already runs (nothing changed); exit 1:
    a program did not start (everything is stopped again; the line names it and its log)."""
    from ops import supervise
    from venue.keys import private_key, task_signing_key
    cfg = _load(config_path)
    _paper_keys(cfg)
    try:   # every program's secret is there before anything starts
        private_key(cfg, cfg.account_a)
        private_key(cfg, cfg.account_b)
        task_signing_key(cfg)
    except ConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        sys.exit(2)
    # Autostart off: `up` starts the engine's programs itself, after Redis answers, and watches them.
    env = _supervisor_env(cfg, config_path, autostart=False)
    # Never touch a running deployment: its Redis state is live (a second `up` used to wipe it).
    pid = supervise.running_supervisord(env)
    if pid is not None:
        click.echo(f"up: already running (supervisord pid {pid}); `lighter-hedge down` first", err=True)
        sys.exit(2)
    try:
        supervise.check_socket_path(env)
    except supervise.StartError as exc:
        click.echo(f"up: {exc}", err=True)
        sys.exit(2)
    problem = supervise.redis_problem(cfg.redis_url)
    start_redis = env["LH_START_REDIS"] == "true"   # nothing listens on this machine's port: run redis-server
    if problem is not None and not start_redis:
        _redis_exit(cfg.redis_url, problem)
    if problem is None:
        from tasks.store import Store
        if Store.from_url(cfg.redis_url).worker_alive():
            click.echo(f"up: a hedge worker is running on {safe_url(cfg.redis_url)} (its heartbeat is fresh); "
                       f"stop that deployment first - nothing was changed", err=True)
            sys.exit(2)
        if cfg.mode == "paper":
            supervise.clear_paper_state(Store.from_url(cfg.redis_url))
            click.echo("paper mode: cleared the previous run's hedge state (the simulator starts empty)")
    try:
        supervise.start(env, cfg)
    except ConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        sys.exit(2)
    except supervise.StartError as exc:
        click.echo(f"up: {exc}", err=True)
        sys.exit(1)
    try:
        if start_redis:
            supervise.wait_for_redis(cfg.redis_url, 15)
        autostarted = ("sim",) if cfg.mode == "paper" else ()
        # Up = RUNNING and answering: the sim, Flower and the console over HTTP, the worker's heartbeat, the
        # maker's start line.
        supervise.start_programs(env, ["worker", "maker", "flower", "console"], already_started=autostarted,
                                 ready=supervise.readiness(cfg, env))
    except supervise.StartError as exc:
        supervise.shutdown(env)
        line = str(exc)
        click.echo(line if line.startswith("redis error:") else f"up: {line}; everything was stopped again",
                   err=True)
        sys.exit(2 if line.startswith("redis error:") else 1)
    click.echo(supervise.ctl(env, "status", check=False).rstrip())


@main.command("down")
@config_option
def down_command(config_path: str | None) -> None:
    """Stop supervisord and every program (the worker finishes its hedge first) and delete the
    programs' secret files (run/secrets/)."""
    from ops import supervise
    cfg = _load(config_path)
    supervise.shutdown(_supervisor_env(cfg, config_path, autostart=True))


@main.command("alerter")
@config_option
@click.option("--log-level", default="INFO")
@click.option("--dry-run", is_flag=True, help="log each alert, POST nothing (no webhook needed)")
def alerter_command(config_path: str | None, log_level: str, dry_run: bool) -> None:
    """POST alerts a person reads to the webhook (alerts: in config.yaml): market paused, resumed, hedge
    failed, no consumer on hedge.b, request budget exhausted, flatten. Serves hedge.b's length and consumer
    presence on metrics.alerter_port."""
    import signal
    import threading

    from ops.alerter import WEBHOOK_FIELD, Webhook, run_alerter, webhook_url
    cfg = _load(config_path)
    _store(cfg)
    try:
        url = None if dry_run else webhook_url(cfg)
    except ConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        sys.exit(2)
    if url is None and not dry_run:
        click.echo(f"config error: alerts.webhook_url_env: ${cfg.alerts.webhook_url_env} is not set (nor "
                   f"\"{WEBHOOK_FIELD}\" in $LH_KEYS_FILE); set it to the webhook URL, or use --dry-run", err=True)
        sys.exit(2)
    a = cfg.alerts
    webhook = None if url is None else Webhook(url, a.format, a.telegram_chat_id, a.delivery_timeout_s,
                                              a.delivery_attempts)
    logs.setup(log_level)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    run_alerter(cfg, webhook, stop)
