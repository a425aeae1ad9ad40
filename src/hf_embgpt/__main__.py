"""`python -m hf_embgpt ...` is `embgpt ...`."""

import sys

from .cli import main

sys.exit(main())
