"""``python -m spikeforge``: the ``spikeforge`` command (:mod:`spikeforge.cli`)."""

import sys

from spikeforge.cli import main

sys.exit(main())
