"""`python -m maker --market ETH` (same as `lighter-hedge maker`)."""
from ops.cli import maker_command

if __name__ == "__main__":
    maker_command(prog_name="python -m maker")
