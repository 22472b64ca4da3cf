"""pgrepl-harness: execute a PostgreSQL primary/secondary runbook on real or container hosts."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RUNBOOKS_DIR = PROJECT_ROOT / "runbooks"
IMAGES_DIR = PROJECT_ROOT / "images"
DEFAULT_RUNBOOK = RUNBOOKS_DIR / "postgresql-primary-secondary.md"
# The login user of every container image (with passwordless sudo), as on an ECS instance.
LOGIN_USER = "ecs-user"
# Where PostgreSQL's packages come from: the runbook's `variant` of its package-source steps, and an
# image's or inventory's `package_source`.
PACKAGE_SOURCES = ("pgdg", "distro")


def available_images() -> list[str]:
    """Names of the image profiles under images/ (kept here: cheap to import, no Docker SDK)."""
    return sorted(p.parent.name for p in IMAGES_DIR.glob("*/image.toml"))
