"""Pure domain of lighter-hedge: no I/O, imports nothing from the other packages.

Everything that decides (which side, how much, what worst price, what to quote next,
is a config valid) lives here as plain functions over plain values.
"""
