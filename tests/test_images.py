"""Image profiles: the pgdg-layout images are built on another profile and say what they are."""

from __future__ import annotations

import pytest

from harness import project
from harness.images import ImageProfile, ImageUnavailable, image_repository
from harness.pair import PreinstalledPackages
from harness.runbook import Block
from harness.targets import BadTarget, target_matrix


@pytest.mark.parametrize(
    ("name", "family", "major", "parent"),
    [("el8-pgdg-layout", "el8", 18, "debian-testing"), ("el7-pgdg-layout", "el7", 15, "debian-12")],
)
def test_a_pgdg_layout_image_is_its_parent_plus_postgresql_in_pgdg_layout(name, family, major, parent):
    profile = ImageProfile.load(name)
    assert (profile.family, profile.pg_major, profile.on_image, profile.preinstalled) == (
        family,
        major,
        parent,
        "pgdg-layout",
    )
    assert ImageProfile.load(parent).pg_major == major, "the parent's Debian archive must ship this major"
    assert profile.base == image_repository(parent)
    assert profile.packaging == "dpkg"
    files = profile.context_files()
    assert "Dockerfile" in files and "pgdg-layout.sh" in files and "image.toml" in files
    assert not any(name.startswith("common/") for name in files), "built on the parent image, not from common/"
    assert (
        f"/var/lib/pgsql/{major}/data" in profile.preinstalled_note and "Debian userland" in profile.preinstalled_note
    )


def test_names_cannot_mislead():
    for name in project.current().image_names():
        profile = ImageProfile.load(name)
        if profile.preinstalled:
            assert name.endswith("-pgdg-layout") and "not an EL system" in profile.description
        else:
            assert profile.preinstalled_note is None and profile.packaging is None


def test_on_image_without_preinstalled_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(project, "_current", project.Project(tmp_path))
    (tmp_path / "images" / "odd").mkdir(parents=True)
    (tmp_path / "images" / "odd" / "image.toml").write_text(
        'description = "x"\nfamily = "el8"\npg_major = 18\non_image = "debian-12"\n'
    )
    with pytest.raises(ImageUnavailable, match="needs preinstalled"):
        ImageProfile.load("odd")


def block(step: str, action: str | None) -> Block:
    return Block(step=step, host="primary", os=("el8",), kind="sh", body="true", line=1, action=action)


def test_package_steps_are_skipped_as_preinstalled_and_nothing_else():
    hook = PreinstalledPackages("preinstalled: why")
    skip = hook.before(block("primary-install", "packages"))
    assert skip is not None and skip.outcome == "skipped (preinstalled)" and skip.note == "preinstalled: why"
    assert hook.before(block("primary-initdb", None)) is None
    assert hook.before(block("failover-promote", "promote")) is None


def test_an_empty_matrix_is_a_clear_error():
    with pytest.raises(BadTarget, match="--ssh-image"):
        target_matrix(images=["el8-pgdg-layout"], backends=["ssh"], ssh_images=["debian-12"])
