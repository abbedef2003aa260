"""`python3 -m vllm_emulator serve [flags]`: the image's `vllm` command runs this."""

import signal
import sys

# As PID 1 of its container this process gets no default action for SIGTERM: catch it before
# the imports below so `docker stop` is never dropped (as tgi_emulator/__main__.py does).
early_signals: list[int] = []
signal.signal(signal.SIGTERM, lambda signum, frame: early_signals.append(signum))
signal.signal(signal.SIGINT, lambda signum, frame: early_signals.append(signum))

from .launcher import main  # noqa: E402

sys.exit(main(early_signals=early_signals))
