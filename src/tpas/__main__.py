"""``python -m tpas``: the same command line as the ``tpas`` script."""

import sys

from tpas.cli import main

sys.exit(main())
