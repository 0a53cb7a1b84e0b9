"""`python -m ovserve` runs the server command."""

import sys

from .cli import main

sys.exit(main())
