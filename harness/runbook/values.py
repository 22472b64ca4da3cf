"""The live values a runbook's binding table may name (its `Bound to` column), each named once."""

from __future__ import annotations

from collections.abc import Mapping

PRIMARY_ADDRESS = "primary.address"
SECONDARY_ADDRESS = "secondary.address"
REPLICATION_PASSWORD = "secret.replication_password"
PG_MAJOR = "pg_major"
TARGETS = frozenset({PRIMARY_ADDRESS, SECONDARY_ADDRESS, REPLICATION_PASSWORD, PG_MAJOR})
# Fixed by the image or inventory before any host exists (the others are known only once hosts run).
STATIC_TARGETS = frozenset({PG_MAJOR})


def live_values(addresses: Mapping[str, str], replication_password: str, pg_major: int) -> dict[str, str]:
    """What each binding target stands for in one pair (`addresses` by role)."""
    return {
        PRIMARY_ADDRESS: addresses["primary"],
        SECONDARY_ADDRESS: addresses["secondary"],
        REPLICATION_PASSWORD: replication_password,
        PG_MAJOR: str(pg_major),
    }


def static_values(pg_major: int) -> dict[str, str]:
    return {PG_MAJOR: str(pg_major)}
