"""``python -m paraconnect.render --port N``: run the built-in render server."""

from ._main import main

raise SystemExit(main())
