"""Test-suite configuration.

In CI (``CI=true``) hypothesis runs derandomized, so a submission is judged on the same examples every time;
locally it keeps exploring new ones.
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    settings.load_profile("ci")
