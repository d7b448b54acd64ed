import sys

from cardamage.cli import main

sys.exit(main())
