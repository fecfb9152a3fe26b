"""`python -m hanode` is `hanode`."""

import sys

from hanode.cli.main import main

sys.exit(main())
