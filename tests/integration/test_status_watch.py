"""`lighter-hedge status --watch` on a real 80x24 terminal (tmux) during an incident: one screen,
redrawn in place, ending with what to do next; the terminal restored on Ctrl-C."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.integration.cluster import BIN, wait_until

pytestmark = pytest.mark.integration

WIDTH, HEIGHT = 80, 24
EXPECTED_ACTION = "ACTION: requeue hedge-ETH-1224, then resume ETH"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Tmux:
    """A tmux server of the test's own (its own socket, no user config): one detached session."""

    def __init__(self, tmp_path, env: dict[str, str]) -> None:
        self.socket = str(tmp_path / "tmux.sock")
        conf = tmp_path / "tmux.conf"
        # No status line (the pane is the whole 80x24), and the pane kept after the command exits
        # so the test can look at the restored terminal.
        conf.write_text("set -g status off\nset -g remain-on-exit on\n")
        self.conf = str(conf)
        self.env = {**env, "TERM": "xterm-256color"}

    def run(self, *args: str) -> str:
        proc = subprocess.run(["tmux", "-S", self.socket, "-f", self.conf, *args], capture_output=True,
                              text=True, env=self.env, timeout=10)
        assert proc.returncode == 0, (args, proc.stderr)
        return proc.stdout

    def screen(self, escapes: bool = False) -> list[str]:
        # -J joins a line the terminal wrapped: a line wider than the pane shows as one long line.
        out = self.run("capture-pane", "-p", "-J", *(["-e"] if escapes else []), "-t", "watch")
        lines = [line.rstrip() for line in out.split("\n")]
        while lines and not lines[-1]:
            lines.pop()
        return lines

    def wait_screen(self, predicate, timeout_s: float, what: str, escapes: bool = False) -> list[str]:
        """The first screen (captured with `escapes` or not) that satisfies `predicate`."""
        found: list[list[str]] = []
        wait_until(lambda: predicate(found.append(self.screen(escapes)) or found[-1]), timeout_s, what)
        return found[-1]

    def pane(self, fmt: str) -> str:
        return self.run("display-message", "-p", "-t", "watch", fmt).strip()

    def kill(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True, timeout=10)


def assert_one_screen(lines: list[str]) -> None:
    assert len(lines) <= HEIGHT, "\n".join(lines)
    assert all(len(line) <= WIDTH for line in lines), "\n".join(line for line in lines if len(line) > WIDTH)
    assert lines[0].startswith("lighter-hedge status "), "\n".join(lines)   # the header: nothing scrolled


def test_watch_fits_an_80x24_terminal_during_an_incident(make_cluster, tmp_path):
    assert shutil.which("tmux"), "tmux is needed for this test (Debian package `tmux`)"
    c = make_cluster()
    c.start_worker()
    c.start_maker()
    c.wait_resting_order()

    # The incident, through the store's public API: a hedge failed and paused ETH, and several
    # task messages were refused (more than the screen lists).
    c.store.hedge_finished("ETH", "hedge-ETH-1224", "1224", ok=False,
                           reason="SlippageError: best bid 2990.10 is 84 bps past max_slippage_bps=50",
                           fill_msg={"fill_id": "1224", "market_index": 0, "side": "buy", "base_amount": "0.0500"})
    c.store.pause("ETH", "hedge hedge-ETH-1224 failed: SlippageError: best bid 2990.10 is 84 bps past "
                  "max_slippage_bps=50", by="maker")
    for i in range(8):
        c.store.record_refused(f"bad-{i}", "RefusedMessageError: refused fill message: fill is not an object",
                               f"not a fill {i}", None)
    wait_until(lambda: c.maker_state() == "PAUSED", 30, "the maker paused")

    tmux = Tmux(tmp_path, c.env())
    try:
        # Under bash, which writes the exit status down: tmux 3.3 does not always reap the pane's
        # process (it can stay a zombie), so #{pane_dead_status} cannot be waited on.
        exit_file = tmp_path / "watch.exit"
        tmux.run("new-session", "-d", "-s", "watch", "-x", str(WIDTH), "-y", str(HEIGHT), "bash", "-c",
                 '"$1" status --watch --interval 0.5 --config "$2"; echo "$?" > "$3"', "watch",
                 str(BIN / "lighter-hedge"), str(c.config_path), str(exit_file))
        assert tmux.pane("#{pane_width}x#{pane_height}") == f"{WIDTH}x{HEIGHT}"
        # Everything the program writes, escapes included (the restore on exit is checked in it).
        tmux.run("pipe-pane", "-t", "watch", "-o", f"cat >> {tmp_path / 'watch.out'}")

        first = tmux.wait_screen(lambda lines: any(line.startswith("ACTION:") for line in lines), 60,
                                 "the ACTION line on the watch screen")
        assert_one_screen(first)
        assert tmux.pane("#{alternate_on}") == "1"
        market = [line for line in first if line.startswith("ETH ")]
        assert len(market) == 1 and market[0].split()[1:4] == ["PAUSED", "hedge", "failed"], first
        assert first[-1] == EXPECTED_ACTION, first
        assert any(line.startswith("failed  hedge-ETH-1224 ") for line in first), first
        assert any("+" in line and "more" in line for line in first), first   # refused messages cut short

        # A change: one more refused message. The next refresh shows it in place, highlighted (in
        # that refresh only: captured with its escapes).
        more_before = next(line for line in first if "more (" in line)
        c.store.record_refused("bad-8", "RefusedMessageError: refused fill message", "not a fill 8", None)
        painted = tmux.wait_screen(lambda lines: any("more (" in line and ANSI.sub("", line) != more_before
                                                     for line in lines), 30,
                                   "the refresh after a new refused message", escapes=True)
        second = [ANSI.sub("", line).rstrip() for line in painted]
        assert_one_screen(second)
        assert second[-1] == EXPECTED_ACTION, second
        assert any("\x1b[7m" in line and "more (" in line for line in painted), painted   # reverse video

        # Ctrl-C: the program ends, the normal screen and cursor are back, the last view printed there.
        tmux.run("send-keys", "-t", "watch", "C-c")
        status = wait_until(lambda: exit_file.exists() and exit_file.read_text().strip(), 30,
                            "status --watch to exit on Ctrl-C")
        assert status == "0", (status, tmux.screen())
        assert tmux.pane("#{alternate_on}") == "0"
        written = (tmp_path / "watch.out").read_bytes()
        assert written.rfind(b"\x1b[?25h") > written.rfind(b"\x1b[?25l"), written[-300:]   # cursor shown again
        after = tmux.screen()
        assert EXPECTED_ACTION in after, after
    finally:
        tmux.kill()

    # Piped, not a terminal: the plain lines each refresh, the same ACTION, no escape codes.
    piped = c.cli("status", "--watch", "--interval", "0.1", "--count", "2")
    assert piped.returncode == 0, piped.stderr
    assert "\x1b" not in piped.stdout
    assert [line for line in piped.stdout.splitlines() if line.startswith("ACTION:")] == [EXPECTED_ACTION] * 2
