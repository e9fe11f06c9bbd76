"""A plugin whose import fails, as when a dependency is missing."""

raise ImportError("faasflow-broken needs the 'no_such_client' package")
