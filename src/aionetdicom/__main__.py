"""``python -m aionetdicom <app>``: the command-line apps (see ``aionetdicom.apps``)."""

import sys

from aionetdicom.apps.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
