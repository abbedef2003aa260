#!/bin/sh
# /tgi-entrypoint.sh of the TGI emulator image. The real one runs ldconfig, activates the
# venv and execs text-generation-launcher "$@" (docs/tgi.md §6); exec keeps the launcher as
# PID 1 so `docker stop`'s SIGTERM reaches it. PYTHONPATH=/opt holds /opt/tgi_emulator.
exec python3 -m tgi_emulator "$@"
