"""Test-suite configuration.

In CI (``CI=true``) hypothesis runs derandomized, so a submission is judged on the same examples every time;
locally it keeps exploring new ones.
"""

import os
import sys

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    settings.load_profile("ci")

# tests/cases.py holds the tables shared by the test packages (surrogates, kernel-level specs)
sys.path.insert(0, os.path.dirname(__file__))
