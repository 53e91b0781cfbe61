"""``python -m otel_greenflash.gateway``."""

import sys

from . import main

sys.exit(main())
