"""`python -m prefork_proxy`: the same as the `prefork-proxy` command."""

import sys

from prefork_proxy.cli import main

sys.exit(main())
