"""`python -m herald.testing.fake_sendgrid`: the fake on its own (see :mod:`.cli`)."""

import sys

from herald.testing.fake_sendgrid.cli import main

sys.exit(main())
