"""A plugin whose import fails, as when a dependency is missing."""

import sheaf_dependency_that_is_not_installed  # noqa: F401
