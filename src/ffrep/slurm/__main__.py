import sys

from ffrep.slurm.cli import main

sys.exit(main())
