"""`python -m bayling_local` runs the CLI."""

import sys

from bayling_local.cli import main

sys.exit(main())
