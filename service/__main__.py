"""``python -m service`` is the ``hotswap`` command."""

import sys

from service.cli import main

sys.exit(main())
