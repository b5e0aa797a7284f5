"""`python -m gateway` is the `sip-push-gateway` command."""

import sys

from gateway.cli import main

sys.exit(main())
