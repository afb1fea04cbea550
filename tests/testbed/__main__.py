"""``python -m tests.testbed`` (``scripts/testbed``): see ``tests.testbed.cli``."""

import sys

from tests.testbed.cli import main

sys.exit(main())
