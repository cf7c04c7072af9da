"""Resume a paused market: the one function `lighter-hedge resume` and the console's Resume both call.

A market with failed hedges is not resumed (A would trade on with a position nobody hedged) unless
`force` acknowledges them: the maker then trades on with them left, until one fails anew.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from tasks.store import Store

log = logging.getLogger("ops.resume")


@dataclass(frozen=True)
class ResumeOutcome:
    market: str
    resumed: bool
    failed: tuple[str, ...]   # the market's failed hedges: left (not resumed) or acknowledged (forced)

    def line(self) -> str:
        """What the CLI prints (stdout when resumed, stderr when not) and the console shows."""
        ids = ", ".join(self.failed)
        if not self.resumed:
            return (f"market={self.market} not resumed: {len(self.failed)} failed hedge(s) remain ({ids}); "
                    f"run `lighter-hedge requeue --all-failed` first")
        if self.failed:
            return (f"market={self.market} resumed with {len(self.failed)} failed hedge(s) acknowledged ({ids}): "
                    f"A stays exposed until they are requeued")
        return f"market={self.market} resumed"


def resume(store: Store, markets: list[str], force: bool = False, by: str = "cli") -> list[ResumeOutcome]:
    """Let A trade again on each market (the pause is removed, the maker told). `by` names the caller
    in the log line (cli, console)."""
    outcomes = []
    for symbol in markets:
        failed = tuple(sorted(store.failed(symbol)))
        if failed and not force:
            log.info("event=resume.refused market=%s by=%s failed=%d", symbol, by, len(failed))
            outcomes.append(ResumeOutcome(symbol, False, failed))
            continue
        if failed:   # forced: the maker trades on with these left, until one fails anew
            store.acknowledge_failed(symbol, list(failed))
        store.resume(symbol)
        log.info("event=resume market=%s by=%s acknowledged_failed=%d", symbol, by, len(failed))
        outcomes.append(ResumeOutcome(symbol, True, failed))
    return outcomes
