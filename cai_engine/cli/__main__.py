"""`python -m cai_engine.cli`: the same as `cai`."""

import sys

from cai_engine.cli import main

sys.exit(main())
