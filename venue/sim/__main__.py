"""`python -m venue.sim --host 127.0.0.1 --port PORT [--seed N] [--config FILE] [--keys-file FILE] [--faults JSON]`."""
import sys

from .server import main

if __name__ == "__main__":
    sys.exit(main())
