"""Settings shared by every test: the hypothesis profiles (the one place they are set), and
a CLI configuration of the test run's own (``THESEUS_CONFIG``), so that no test reads or
writes the contexts of whoever runs the suite.

* ``ci`` (loaded by default): 200 examples per property, derandomized, so that every run, on
  every machine, tries the same examples and a failure in CI is a failure of the change
  under test, reproducible locally, never a rare example someone else's change happened to
  draw. No example database (nothing to keep between CI runs), no deadline: the time of one
  example varies with the machine's load, and a slow example is not a wrong one.
* ``explore``: random, 2,000 examples per property (about two minutes), with the database
  in ``.hypothesis/`` (ignored by git) so that a failure found once is replayed first next
  time. For hunting new failures after a change to the reconciler or the scheduler:
  ``pytest tests/unit/test_reconcile_properties.py --hypothesis-profile=explore`` (add
  ``--hypothesis-seed=N`` to repeat a run; ``ci`` ignores seeds, being derandomized).

On failure both print the ``@reproduce_failure`` blob of the shrunk example.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import settings

os.environ["THESEUS_CONFIG"] = str(Path(tempfile.mkdtemp(prefix="theseus-cli-")) / "config.json")

settings.register_profile(
    "ci", max_examples=200, derandomize=True, database=None, deadline=None, print_blob=True
)
settings.register_profile("explore", max_examples=2000, deadline=None, print_blob=True)
settings.load_profile("ci")
