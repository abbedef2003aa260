"""`python3 -m tgi_emulator [launcher flags]`: the image's entrypoint runs this."""

import sys

from .launcher import main

sys.exit(main())
