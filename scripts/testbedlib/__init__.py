"""The tgiops testbed: "GPU hosts" booted on one Linux machine for end-to-end tests.

A host is a Debian bookworm root filesystem booted with systemd as PID 1 under
``systemd-nspawn`` in its own network namespace, with its own sshd, a real ``dockerd``
(running outside the host, in the host's network namespace), a fake ``nvidia-smi``,
a ``docker`` shim that turns ``--gpus`` into an inventory for the TGI emulator, and the
TGI emulator images loaded under TGI's image name. A moto server on loopback stands in
for AWS. ``scripts/testbed`` is the command line; ``tests/conftest.py`` builds its
fixtures on :class:`testbedlib.testbed.Testbed`.

Everything here is standard library only, so ``scripts/testbed`` runs with any python3.
"""
