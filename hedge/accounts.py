"""A and B under one master account: the condition for B's self-trade prevention to protect A.

B's hedges use Lighter's master-account equality for self-trade prevention: B never trades
against A's resting order only if both accounts have the same master. Pure: the venue read is
venue.client.VenueClient.account_identity.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AccountIdentity:
    account_index: int
    master_account_index: int | None   # None: the venue's answer did not say
    l1_address: str | None             # a master and its sub-accounts share one L1 address


def same_master_problem(a: AccountIdentity, b: AccountIdentity) -> str | None:
    """None when A and B provably share a master; else one line naming both accounts and masters.

    The master index decides when the venue reports it for both; otherwise the L1 address does
    (Lighter's sub-accounts carry their master's L1 address)."""
    if a.master_account_index is not None and b.master_account_index is not None:
        if a.master_account_index == b.master_account_index:
            return None
        return (f"accounts: account_a {a.account_index} has master {a.master_account_index} but account_b "
                f"{b.account_index} has master {b.master_account_index}; self-trade prevention (master "
                f"equality) only keeps B's hedges off A's orders under one master")
    if a.l1_address and b.l1_address:
        if a.l1_address.lower() == b.l1_address.lower():
            return None
        return (f"accounts: account_a {a.account_index} (master {_shown(a.master_account_index)}, L1 "
                f"{a.l1_address}) and account_b {b.account_index} (master {_shown(b.master_account_index)}, "
                f"L1 {b.l1_address}) are under different masters; self-trade prevention (master equality) "
                f"only keeps B's hedges off A's orders under one master")
    return (f"accounts: cannot tell whether account_a {a.account_index} and account_b {b.account_index} share "
            f"a master: the venue reported neither master_account_index nor l1_address for both")


def _shown(value: int | None) -> str:
    return "unknown" if value is None else str(value)
