"""Live mode refuses A and B under different masters (hedge/accounts.py): B's self-trade prevention
uses master equality, so only then does it keep B's hedges off A's resting orders."""
from __future__ import annotations

from hedge.accounts import AccountIdentity, same_master_problem


def test_same_master_passes():
    assert same_master_problem(AccountIdentity(281001, 281000, "0xaa"), AccountIdentity(281002, 281000, "0xbb")) is None


def test_different_masters_name_both_accounts_and_masters():
    problem = same_master_problem(AccountIdentity(281001, 281000, None), AccountIdentity(281002, 999000, None))
    assert problem is not None and "\n" not in problem
    for part in ("account_a 281001", "master 281000", "account_b 281002", "master 999000"):
        assert part in problem, problem


def test_without_masters_the_l1_address_decides():
    assert same_master_problem(AccountIdentity(1, None, "0xAbC"), AccountIdentity(2, None, "0xabc")) is None
    problem = same_master_problem(AccountIdentity(1, None, "0xabc"), AccountIdentity(2, 7, "0xdef"))
    assert problem and "0xabc" in problem and "0xdef" in problem and "master 7" in problem


def test_nothing_to_compare_is_refused_too():
    problem = same_master_problem(AccountIdentity(1, None, None), AccountIdentity(2, 5, None))
    assert problem and "cannot tell" in problem
