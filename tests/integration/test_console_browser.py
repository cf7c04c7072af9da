"""`lighter-hedge console` in a real browser (headless Chromium from Debian's packages, driven by
Selenium) against a paper stack: the book moves away from A's fill so B's hedge fails on slippage
and the console shows it; Requeue with a wider max slippage (priced first) hedges it; Resume brings
A back; Flatten asks to confirm and ends flat at the venue. Screenshots of every step are written
to the test's tmp dir (the path is printed: `pytest -s`).

The console runs as supervisord runs it: its own secrets file (the task signing key and the basic
auth, no account key), so its Flatten goes through the maker and the worker."""
from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import urllib.error
import urllib.request
from decimal import ROUND_DOWN, Decimal

import pytest
import yaml

from ops import supervise
from tests.integration.cluster import A, B, BIN, ETH, wait_until
from venue.keys import TASK_SIGNING_KEY_FIELD, read_key_file
from venue.sim.harness import free_port

pytestmark = pytest.mark.integration

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROME_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1400,1800")
Q = Decimal("0.0500")
WAIT_S = 30


def _browser_or_skip() -> None:
    """Skipped only off CI with a clear reason; in CI (CI=true) a missing browser fails the run."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip: the project's test extras)")
    if not missing:
        return
    why = (f"the browser test needs {', '.join(missing)}: `apt-get install -y chromium chromium-driver` "
           f"(`make test` and .ci/run install them)")
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture
def browser(tmp_path):
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROME_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    # The driver from Debian's package: Selenium Manager downloads nothing.
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _http(url: str, *, method: str = "GET", headers: dict[str, str] | None = None, body: dict | None = None):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, method=method, headers=headers or {},
                                     data=None if body is None else json.dumps(body).encode())
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_console_shows_a_slippage_failure_requeues_resumes_and_flattens(make_cluster, browser, tmp_path, monkeypatch):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"\nconsole screenshots: {shots}")

    def shot(name: str) -> None:
        browser.save_screenshot(str(shots / f"{name}.png"))

    # A stack whose synthetic book levels are each larger than A's order (a move of the book fills A
    # in one trade), one retry per hedge.
    c = make_cluster(strategy={"max_retries": 1, "retry_backoff_max_s": 1},
                     sim={"level_size_min_lots": 20, "level_size_max_lots": 40})
    port = free_port()
    c.config["console"] = {"port": port}
    c.config_path.write_text(yaml.safe_dump(c.config))
    c.start_worker()
    c.start_maker()
    order = c.wait_resting_order()

    # The console as `up` runs it: console.json = the task signing key + the basic auth, no account key.
    password = "console-" + secrets.token_hex(8)
    run_dir = tmp_path / "run"
    secrets_dir = run_dir / "secrets"
    secrets_dir.mkdir(parents=True, mode=0o700)
    signing_key = read_key_file(c.keys_file)[TASK_SIGNING_KEY_FIELD]
    monkeypatch.setenv("LH_FLOWER_USER", "operator")
    monkeypatch.setenv("LH_FLOWER_PASSWORD", password)
    supervise.write_console_secrets(secrets_dir, signing_key, run_dir)
    console_keys = read_key_file(str(secrets_dir / "console.json"))
    # No account key: only the signing key, the basic auth and (from $LH_REDIS_URL) the Redis URL.
    assert set(console_keys) <= {TASK_SIGNING_KEY_FIELD, "console_user", "console_password", "redis_url"}, \
        sorted(console_keys)
    # Nothing from the environment but the config's path: the password and keys from its own file.
    env = {k: v for k, v in c.env().items() if not k.startswith(("LH_FLOWER_", "LH_ACCOUNT_", "LH_TASK_SIGNING"))}
    env.update(LH_RUN_DIR=str(run_dir), LH_KEYS_FILE=str(secrets_dir / "console.json"))
    log = open(tmp_path / "console.log", "ab")
    c.procs["console"] = subprocess.Popen([str(BIN / "lighter-hedge"), "console", "--config", str(c.config_path)],
                                          stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    log.close()
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: supervise.http_answers(base + "/healthz") or c.procs["console"].poll() is not None, WAIT_S,
               "the console to answer")
    assert c.procs["console"].poll() is None, c.log("console")

    # No page without the basic auth; no action without the page's own header, nor from another origin.
    auth = "Basic " + base64.b64encode(f"operator:{password}".encode()).decode()
    assert _http(base + "/")[0] == 401
    wrong = "Basic " + base64.b64encode(b"operator:wrong").decode()
    assert _http(base + "/api/state", headers={"Authorization": wrong})[0] == 401
    action = {"Authorization": auth, "Content-Type": "application/json"}
    assert _http(base + "/api/resume", method="POST", headers=action, body={"market": "ETH"})[0] == 403
    other_site = {**action, "X-Requested-With": "lighter-hedge-console", "Origin": "http://evil.example"}
    assert _http(base + "/api/resume", method="POST", headers=other_site, body={"market": "ETH"})[0] == 403
    assert _http(base + "/api/state", headers={"Authorization": auth, "Host": "evil.example"})[0] == 421

    # The browser sends the basic auth on every request (a person types it into the browser's prompt).
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": auth}})
    browser.get(base + "/")
    wait = WebDriverWait(browser, WAIT_S, poll_frequency=0.2)
    market = "#market-ETH"

    def text_of(selector: str) -> str:
        return browser.find_element(By.CSS_SELECTOR, selector).text

    wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, f"{market} .sentence"), "ETH is running"))
    wait.until(lambda d: "a worker consumes hedge.b" in text_of("#consumer"))
    assert text_of(f"{market} .state") == "RUNNING"
    assert "used in the rolling" in text_of("#budget")
    shot("01-running")

    # The book drops 3 % under A's resting bid: the synthetic asks fill A at its price, and B's hedge
    # finds no bid within max_slippage_bps (50) of that fill: it fails on slippage, the market pauses.
    price = Decimal(order["price"])
    low = (price * Decimal("0.97")).quantize(Decimal("0.01"), rounding=ROUND_DOWN)
    c.sim.admin("/admin/market", {"market_id": ETH, "mid": str(low)})
    wait_until(lambda: c.position(A) == Q, WAIT_S, "A filled by the moved book")
    row = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, f"{market} table.failed tr[data-task-id]")))
    wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, f"{market} .state"), "PAUSED"))
    task_id = row.get_attribute("data-task-id")
    assert task_id.startswith("hedge-ETH-"), task_id
    cells = {name: row.find_element(By.CSS_SELECTOR, f".{name}").text
             for name in ("fill", "side", "size", "price", "reason", "attempts")}
    assert cells["side"] == "buy" and Decimal(cells["size"]) == Q and Decimal(cells["price"]) == price, cells
    assert "max_slippage_bps" in cells["reason"] and "filled nothing" in cells["reason"], cells
    assert cells["attempts"] == "2", cells   # max_retries 1: two attempts
    assert "is paused" in text_of(f"{market} .sentence")
    assert not browser.find_element(By.CSS_SELECTOR, f"{market} button.resume").is_enabled()
    assert Decimal(text_of(f"{market} .net")) == Q
    assert text_of("#action").startswith("ACTION: requeue ")
    shot("02-failed-on-slippage")

    # Requeue with a wider bound: the preview prices it from the book first, then it is sent.
    row.find_element(By.CSS_SELECTOR, "input.bps").send_keys("500")
    row.find_element(By.CSS_SELECTOR, "button.requeue").click()
    preview = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, f"{market} tr[data-task-id] .send")))
    preview_text = text_of(f"{market} tr[data-task-id] .preview-text")
    assert "bps from A's fill" in preview_text and "max_slippage_bps=500" in preview_text, preview_text
    shot("03-requeue-preview")
    preview.click()
    wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, f"{market} .result"), "requeued"))
    wait_until(lambda: c.position(B) == -Q, WAIT_S, "B hedged by the requeue")
    wait.until(EC.invisibility_of_element_located((By.CSS_SELECTOR, f"{market} table.failed tr[data-task-id]")))
    wait.until(lambda d: Decimal(text_of(f"{market} .b") or "1") == -Q and Decimal(text_of(f"{market} .net")) == 0)
    shot("04-requeued-hedged")

    # Resume: enabled now that no hedge of ETH has failed; A quotes again (its close, being long).
    resume = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, f"{market} button.resume")))
    orders_before = len(c.orders_log(A))
    resume.click()
    wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, f"{market} .result"), "market=ETH resumed"))
    wait_until(lambda: c.active_orders(), WAIT_S, "A's order after the resume")
    assert len(c.orders_log(A)) > orders_before
    wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, f"{market} .state"), "RUNNING"))
    shot("05-resumed")

    # Flatten: the browser asks first (the CLI's question), then A and B end flat at the venue.
    browser.find_element(By.CSS_SELECTOR, f"{market} button.flatten").click()
    alert = wait.until(EC.alert_is_present())
    assert alert.text.startswith(f"Close every position of accounts {A} and {B} on ETH (paper mode)"), alert.text
    alert.accept()
    wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, f"{market} .result"), "flattened"))
    result = text_of(f"{market} .result")
    assert "a_position=0 b_position=0 net_exposure=0" in result, result
    assert c.position(A) == 0 and c.position(B) == 0
    wait.until(lambda d: text_of(f"{market} .a") == "0" and text_of(f"{market} .b") == "0")
    assert "flattened by operator" in text_of(f"{market} .sentence")
    shot("06-flattened")

    logged = c.log("console")
    assert password not in logged and signing_key not in logged
    assert "event=console.requeue market=ETH" in logged and "event=console.flatten market=ETH" in logged
    assert all((shots / f"{name}.png").stat().st_size > 0 for name in
               ("01-running", "02-failed-on-slippage", "03-requeue-preview", "04-requeued-hedged", "05-resumed",
                "06-flattened"))
