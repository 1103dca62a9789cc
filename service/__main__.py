"""``python -m service`` is the ``hotswap`` command."""

import sys

from service.entry import main

sys.exit(main())
