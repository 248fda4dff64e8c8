"""Suite-wide settings.

Hypothesis explores new examples on every local run (failures are saved in .hypothesis/ and replayed), but in
CI (``CI`` set) it is derandomized: the same examples every run, so a submission's result never depends on
luck. Deadlines are off everywhere: on a shared two-core machine wall-clock time per example is noise.
"""

import os

from hypothesis import settings

settings.register_profile("dev", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
