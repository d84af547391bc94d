"""Moved to `sheaf_server.config_check` (checking a whole sheaf.yaml is the server's job);
this path works for one release, with a DeprecationWarning."""

import warnings

warnings.warn("sheaf_core.config_check moved to sheaf_server.config_check; the old path goes "
              "in the next release", DeprecationWarning, stacklevel=2)

from sheaf_server.config_check import *  # noqa: E402,F403
from sheaf_server.config_check import check_config, check_config_file  # noqa: E402

__all__ = ["check_config", "check_config_file"]
