"""pgrepl-harness: execute a PostgreSQL primary/secondary runbook on real or container hosts.

The runbooks, image profiles and scenarios are the project's, not the package's: harness.project
finds them.
"""

import os
from pathlib import Path

# The login user of every container image (with passwordless sudo), as on an ECS instance.
LOGIN_USER = "ecs-user"
# Where PostgreSQL's packages come from: the runbook's `variant` of its package-source steps, and an
# image's or inventory's `package_source`.
PACKAGE_SOURCES = ("pgdg", "distro")
# The runbook's two hosts, by the roles they are set up in: its blocks' `host`, an inventory's tables,
# the harness's machines' names.
ROLES = ("primary", "secondary")
# This user's cache: step snapshots' run state, the runs' private keys, the sessions' registries.
CACHE_ROOT = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pgrepl-harness"
