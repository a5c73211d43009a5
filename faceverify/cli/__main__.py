"""``python -m faceverify.cli`` (torchrun uses it: ``torchrun ... -m faceverify.cli train CONFIG``)."""

import sys

from faceverify.cli import main

sys.exit(main())
