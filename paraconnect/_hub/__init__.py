"""The hub's implementation; the public names are in :mod:`paraconnect.hub`."""
