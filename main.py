"""The original entry point: `python main.py --config application_config.json --debug False`."""

import sys

from cardamage.console import main

if __name__ == "__main__":
    sys.exit(main())
