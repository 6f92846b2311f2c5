"""`python -m sera ...`, the same as `sera ...`."""

import sys

from sera.cli import main

sys.exit(main())
