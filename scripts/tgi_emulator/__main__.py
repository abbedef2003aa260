"""`python3 -m tgi_emulator [launcher flags]`: the image's entrypoint runs this."""

import signal
import sys

# As PID 1 of its container, this process gets no default action for SIGTERM: until a handler
# is installed, `docker stop`'s SIGTERM is dropped and docker waits its whole --time (90 s in
# tgiops' unit) before SIGKILL. TGI's launcher handles it from its first milliseconds, so this
# catches it before the imports below and hands it on.
early_signals: list[int] = []
signal.signal(signal.SIGTERM, lambda signum, frame: early_signals.append(signum))
signal.signal(signal.SIGINT, lambda signum, frame: early_signals.append(signum))

from .launcher import main  # noqa: E402

sys.exit(main(early_signals=early_signals))
