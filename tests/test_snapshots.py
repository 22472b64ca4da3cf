"""Step snapshots in two levels (harness.snapshots): a host starts from the deepest level saved and
saves the next, so an edit of a prefix step after the packages keeps the packages' snapshot."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from harness import project
from harness.images import ImageProfile
from harness.runbook import edit_block, parse_runbook
from harness.snapshots import BUDGET_VAR, BadBudget, Cached, SnapshotPlan, budget, epoch, evictions, levels_of

RUNBOOK = parse_runbook(project.current().default_runbook)


def plan_for(image: str, saved: set[str], book=RUNBOOK) -> SnapshotPlan:
    profile = ImageProfile.load(image)
    blocks = book.select(family=profile.family, parts=("setup",), variant=profile.package_source)
    return SnapshotPlan(
        book, blocks, image=image, base_tag="base:1", pg_major=profile.pg_major, exists=lambda tag: tag in saved
    )


def steps(plan: SnapshotPlan, host: str, blocks: int) -> list[str]:
    return [b.step for b in plan.prefixes[host][:blocks]]


@pytest.mark.parametrize("image", ["debian-12", "el8-pgdg-layout"])
def test_the_primarys_prefix_has_a_packages_level_and_the_secondarys_is_the_packages_alone(image):
    plan = plan_for(image, set())
    [packages, whole] = plan.levels["primary"]
    assert steps(plan, "primary", packages.blocks)[-1] == "primary-install"
    assert whole.blocks == len(plan.prefixes["primary"]) and steps(plan, "primary", whole.blocks)[-1] == "primary-start"
    assert [level.blocks for level in plan.levels["secondary"]] == [len(plan.prefixes["secondary"])]
    assert levels_of([]) == [0] and not plan.start, "nothing saved: every host starts from the image"
    assert plan.next == {"primary": packages, "secondary": plan.levels["secondary"][0]}


def test_a_host_starts_from_the_deepest_level_saved_and_saves_the_next():
    nothing = plan_for("debian-12", set())
    packages, whole = nothing.levels["primary"]
    only_packages = plan_for("debian-12", {packages.tag})
    assert only_packages.start_image("primary") == packages.tag and only_packages.next["primary"] == whole
    assert only_packages.start_image("secondary") == "base:1"
    both = plan_for("debian-12", {packages.tag, whole.tag})
    assert both.start_image("primary") == whole.tag and "primary" not in both.next
    # a full prefix saved before levels existed (no packages level): still the start, nothing to save
    old = plan_for("debian-12", {whole.tag})
    assert old.start_image("primary") == whole.tag and "primary" not in old.next


def test_an_edit_after_the_packages_keeps_the_packages_level_and_an_edit_of_them_does_not():
    packages, whole = plan_for("debian-12", set()).levels["primary"]
    configured = edit_block(RUNBOOK, "primary-configure", "wal_level = replica", "wal_level = logical")
    edited = plan_for("debian-12", {packages.tag, whole.tag}, configured)
    assert edited.levels["primary"][0] == packages and edited.levels["primary"][1] != whole
    assert edited.start_image("primary") == packages.tag and edited.next["primary"] == edited.levels["primary"][1]
    block = next(b for b in RUNBOOK.blocks if b.step == "primary-install" and "debian" in b.os)
    installed = edit_block(RUNBOOK, "primary-install", block.body.splitlines()[-1], block.body.splitlines()[-1] + " ")
    assert plan_for("debian-12", {packages.tag}, installed).start_image("primary") == "base:1"


class Recorder:
    """Hosts whose PostgreSQL is not running, and a commit that records what it saved."""

    def __init__(self) -> None:
        self.commits: list[tuple[str, str]] = []
        self.hosts = {role: SimpleNamespace(run=lambda *a, **k: SimpleNamespace(stdout="")) for role in ("primary",)}

    def commit(self, host: str, tag: str) -> None:
        self.commits.append((host, tag))


def run_prefix(plan: SnapshotPlan, recorder: Recorder) -> list[str]:
    """The hook around the primary's prefix: the steps it skips as reused."""
    hook = plan.hook(recorder.hosts, recorder.commit, log=lambda line: None)
    skipped = []
    for block in plan.prefixes["primary"]:
        if hook.before(block) is not None:
            skipped.append(block.step)
        else:
            hook.after(block, None)
    return skipped


def test_the_hook_saves_one_level_per_host_and_skips_the_steps_of_the_level_it_started_from():
    saved: set[str] = set()
    first = Recorder()
    plan = plan_for("debian-12", saved)
    assert run_prefix(plan, first) == []
    packages, whole = plan.levels["primary"]
    assert first.commits == [("primary", packages.tag)], "from the image: the packages level only"
    saved.add(packages.tag)
    second = Recorder()
    assert run_prefix(plan_for("debian-12", saved), second) == steps(plan, "primary", packages.blocks)
    assert second.commits == [("primary", whole.tag)], "from the packages: the whole prefix, a layer over them"
    saved.add(whole.tag)
    third = Recorder()
    assert run_prefix(plan_for("debian-12", saved), third) == steps(plan, "primary", whole.blocks)
    assert third.commits == []


HOUR = 3600.0
NOW = 1_800_000_000.0


def snapshot(name: str, *, size: int = 100, used_hours_ago: float, created: float, parent: str = "") -> Cached:
    return Cached(id=name, parent=parent, size=size, used=NOW - used_hours_ago * HOUR, created=created)


def test_beyond_the_budget_the_least_recently_used_go_and_within_it_nothing_does():
    cache = [
        snapshot("old", used_hours_ago=50, created=1),
        snapshot("mid", used_hours_ago=20, created=2),
        snapshot("new", used_hours_ago=2, created=3),
    ]
    assert evictions(cache, budget=300, now=NOW) == []
    assert evictions(cache, budget=250, now=NOW) == ["old"]
    assert evictions(cache, budget=0, now=NOW) == ["new", "mid", "old"], "newest first, as the engine allows"


def test_a_snapshot_used_within_the_last_hour_stays_whatever_the_budget():
    cache = [
        snapshot("chosen", size=10**12, used_hours_ago=0.5, created=1),
        snapshot("idle", used_hours_ago=3, created=2),
    ]
    assert evictions(cache, budget=0, now=NOW) == ["idle"]


def test_a_packages_level_stays_while_a_level_over_it_stays_and_goes_after_it():
    cache = [
        snapshot("packages", size=600, used_hours_ago=40, created=1),
        snapshot("configured", size=30, used_hours_ago=2, created=2, parent="packages"),
        snapshot("other", size=30, used_hours_ago=10, created=3),
    ]
    # the packages level was last used with the level over it (2 h ago), not 40 h ago: "other" goes first
    assert evictions(cache, budget=630, now=NOW) == ["other"]
    assert evictions(cache, budget=0, now=NOW) == ["other", "configured", "packages"]


@pytest.mark.parametrize(
    ("setting", "expected"), [("", 8 * 2**30), ("0", 0), ("500M", 500 * 2**20), ("1.5GiB", 3 * 2**29), ("2048", 2048)]
)
def test_the_budget_is_a_size_with_an_optional_unit(setting, expected):
    assert budget({BUDGET_VAR: setting}) == expected


def test_a_budget_that_is_no_size_names_the_setting_and_the_fix():
    with pytest.raises(BadBudget, match=rf"{BUDGET_VAR}='lots' is not a size: set it to .* e\.g\. {BUDGET_VAR}=4G"):
        budget({BUDGET_VAR: "lots"})


def test_the_engines_times_are_read_to_the_microsecond_and_its_zero_time_is_never():
    assert epoch("2026-12-07T19:51:20.167733803Z") == pytest.approx(1796673080.167734)
    assert epoch("2026-12-07T20:51:20+01:00") == 1796673080.0
    assert epoch("0001-01-01T00:00:00Z") == epoch("") == 0.0


def test_an_engine_that_fails_during_the_upkeep_fails_no_run():
    import docker.errors

    from harness.snapshots import remove_unused_snapshots

    def fail(**_):
        raise docker.errors.APIError("500 Server Error: the engine is restarting")

    said: list[str] = []
    client = SimpleNamespace(api=SimpleNamespace(images=fail))
    assert remove_unused_snapshots(client, owner_id="me", log=said.append) == 0
    [line] = said
    assert line.startswith(f"step snapshots beyond {BUDGET_VAR} are left to the next run: the engine failed")
