import sys

from ffrep.cli import main

sys.exit(main())
