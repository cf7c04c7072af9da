"""Account A: the quote loop, fill detection from the account stream, waiting on hedge results."""
