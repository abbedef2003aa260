"""`python -m tgiops.cli`: the same entry point as the `tgiops` script."""

from tgiops.cli.main import main

raise SystemExit(main())
