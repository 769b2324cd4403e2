"""`python -m orchestra.cli`: the same as the `orchestra` command."""

import sys

from orchestra.cli import main

sys.exit(main())
