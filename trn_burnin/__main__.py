import sys

from trn_burnin.cli import main

sys.exit(main())
