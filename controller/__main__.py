"""`python -m controller`: run the Loom controller."""

import sys

from controller.launcher import main

if __name__ == "__main__":
    sys.exit(main())
