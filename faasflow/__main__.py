"""``python -m faasflow``: the same as the ``faasflow`` command."""

from faasflow.cli import main

raise SystemExit(main())
