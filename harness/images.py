"""Image profiles (images/NAME/image.toml) and the one code path that builds them.

An image is built from images/common/ (its Dockerfile, unless images/NAME/ has its own) and
the profile, with the docker SDK. Its
tag carries a hash of that context and of the base image, so an unchanged Dockerfile is not
rebuilt. When the base image is neither local nor pullable (no registry here), a Debian base
is made from the Debian archive with debootstrap and imported under the base's name, so the
same Dockerfile builds with or without a registry.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors

from harness import LOGIN_USER, project
from harness.errors import ImageUnavailable
from harness.labels import LABEL
from harness.waiting import wait_until

DEFAULT_MIRROR = "http://deb.debian.org/debian"
__all__ = [
    "ImageProfile",
    "ImageUnavailable",
    "ensure_image",
    "image_exists",
    "image_repository",
    "snapshot_repository",
]


def image_repository(image: str) -> str:
    """Where builds of image profile `image` are tagged (the tag is a hash of the build context)."""
    return f"pgrepl/{image}"


def snapshot_repository(image: str, host: str) -> str:
    """Where snapshots of `host` (a role) started from `image` are tagged (see harness.snapshots)."""
    return f"pgrepl-snapshot/{image}-{host}"


def image_exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


@dataclass(frozen=True)
class ImageProfile:
    name: str
    description: str
    base: str
    family: str
    pg_major: int
    package_source: str = "pgdg"
    debootstrap_suite: str | None = None
    debootstrap_script: str | None = None
    apt_ignore_valid_until: bool = False
    lang: str = "C.UTF-8"
    # Built on top of another image profile (which names the base, once) by images/<preinstalled>/:
    # "pgdg-layout" preinstalls PostgreSQL pg_major from that image's Debian archive in PGDG's EL
    # layout; the harness skips the runbook's package steps on such an image.
    on_image: str | None = None
    preinstalled: str | None = None
    directory: Path = field(default_factory=lambda: project.current().images, repr=False)

    @classmethod
    def load(cls, name: str) -> ImageProfile:
        images = project.current().images
        path = images / name / "image.toml"
        if not path.is_file():
            known = ", ".join(project.current().image_names()) or "none"
            raise ImageUnavailable(f"unknown image {name!r}: no {path} (known: {known})")
        data = tomllib.loads(path.read_text())
        if "on_image" in data:
            data.setdefault("base", image_repository(data["on_image"]))
            if data.get("preinstalled") not in PREINSTALLS:
                raise ImageUnavailable(f"{path}: an image with on_image needs preinstalled, one of {PREINSTALLS}")
        return cls(name=name, directory=path.parent, **data)

    @property
    def preinstalled_note(self) -> str | None:
        """What the transcript says at the top and at each package step the harness skips here."""
        if self.preinstalled != "pgdg-layout":
            return None
        return (
            f"preinstalled: PostgreSQL {self.pg_major} from Debian's archive, arranged in PGDG's layout "
            f"(/usr/pgsql-{self.pg_major}, /var/lib/pgsql/{self.pg_major}/data, postgresql-{self.pg_major}.service) "
            "on a Debian userland; the runbook's package steps do not run on this image"
        )

    @property
    def packaging(self) -> str | None:
        """The package manager, where it is not the family's own (PGDG's layout installed by dpkg)."""
        return "dpkg" if self.preinstalled else None

    def context_files(self) -> dict[str, bytes]:
        """The build context: images/common/ (or images/<preinstalled>/ for an image built on another)
        and this image's directory (which may hold its own Dockerfile)."""
        files: dict[str, bytes] = {}
        images = project.current().images
        shared = (images / self.preinstalled, "") if self.on_image else (images / "common", "common/")
        for root, prefix in (shared, (self.directory, "")):
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    files[prefix + path.relative_to(root).as_posix()] = path.read_bytes()
        return files


PREINSTALLS = ("pgdg-layout",)  # directories of images/ that build on top of another image


def _client() -> docker.DockerClient:
    from harness.hosts.docker import from_env  # the Docker SDK's engine, reached as the harness reaches it

    return from_env()


BUILD_LOCK_TIMEOUT = 1800.0  # a cold build of every image takes minutes, never this long


@contextmanager
def _build_lock(name: str) -> Iterator[None]:
    """Serialise builds of one image across pytest-xdist workers and parallel commands (per user)."""
    path = Path(tempfile.gettempdir()) / f"pgrepl-build-{os.getuid()}-{name}.lock"

    def locked() -> bool:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    with open(path, "w") as handle:
        wait_until(
            locked, timeout=BUILD_LOCK_TIMEOUT, interval=0.5, what=f"the build lock {path} (held by another build)"
        )
        yield


def tar_context(files: Mapping[str, bytes]) -> io.BytesIO:
    """A tar archive of `files` (name: content; a `.sh` executable), read from its start: a build context."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755 if name.endswith(".sh") else 0o644
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    return context


def ensure_image(profile: ImageProfile, *, log=print) -> str:
    """Return the tag of the built image, building it (and its base) only when needed."""
    client = _client()
    parent = ensure_image(ImageProfile.load(profile.on_image), log=log) if profile.on_image else None
    with _build_lock(profile.name):
        base_id = client.images.get(parent).id if parent else ensure_base(profile, client, log=log)
        files = profile.context_files()
        digest = hashlib.sha256(f"{base_id}\0{LOGIN_USER}\0".encode())
        if parent:
            digest.update(f"{profile.pg_major}\0".encode())
        for name, data in files.items():
            digest.update(name.encode() + b"\0" + data + b"\0")
        tag = f"{image_repository(profile.name)}:{digest.hexdigest()[:12]}"
        if image_exists(client, tag):
            return tag
        dockerfile = "Dockerfile" if "Dockerfile" in files else "common/Dockerfile"
        log(f"building image {tag} for images/{profile.name} with {dockerfile}")
        try:
            client.images.build(
                fileobj=tar_context(files),
                custom_context=True,
                dockerfile=dockerfile,
                tag=tag,
                buildargs={
                    "BASE": parent or profile.base,
                    "LOGIN_USER": LOGIN_USER,
                    "LANG": profile.lang,
                    "PG_MAJOR": str(profile.pg_major),
                },
                labels={LABEL: "image", f"{LABEL}.image": profile.name},
                rm=True,
                forcerm=True,
                pull=False,
            )
        except docker.errors.BuildError as exc:
            output = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in exc.build_log)
            raise ImageUnavailable(f"image {profile.name}: docker build failed: {exc.msg}\n{output[-3000:]}") from exc
        return tag


def ensure_base(profile: ImageProfile, client: docker.DockerClient, *, log=print) -> str:
    """Make sure the base image exists locally; return its id."""
    try:
        return client.images.get(profile.base).id
    except docker.errors.ImageNotFound:
        pass
    try:
        log(f"pulling base image {profile.base}")
        return client.images.pull(profile.base).id
    except docker.errors.APIError as exc:
        pull_error = "no registry reachable" if "registry" in str(exc) or "lookup" in str(exc) else str(exc)[:120]
    if not profile.debootstrap_suite:
        raise ImageUnavailable(
            f"image {profile.name}: base image {profile.base} is neither local nor pullable ({pull_error}), "
            "and it has no offline (debootstrap) recipe"
        )
    return _debootstrap_base(profile, client, log=log)


def debian_mirror() -> str:
    """The Debian mirror this machine's apt already uses."""
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        match = re.search(r"^URIs:\s*(\S+/debian)\s*$", text, re.M) or re.search(
            r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+/debian)\s", text, re.M
        )
        if match:
            return match.group(1)
    return DEFAULT_MIRROR


def _debootstrap_base(profile: ImageProfile, client: docker.DockerClient, *, log=print) -> str:
    if shutil.which("debootstrap") is None:
        raise ImageUnavailable(
            f"image {profile.name}: base {profile.base} must be made offline but debootstrap is "
            "missing (apt-get install debootstrap)"
        )
    mirror = debian_mirror()
    log(f"making base image {profile.base} with debootstrap {profile.debootstrap_suite} from {mirror}")
    with tempfile.TemporaryDirectory(prefix="pgrepl-rootfs-") as rootfs:
        argv = ["debootstrap", "--variant=minbase", profile.debootstrap_suite, rootfs, mirror]
        if profile.debootstrap_script:
            argv.append(profile.debootstrap_script)
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise ImageUnavailable(
                f"image {profile.name}: debootstrap {profile.debootstrap_suite} failed:\n{done.stdout[-2000:]}"
            )
        if profile.apt_ignore_valid_until:
            conf = Path(rootfs) / "etc/apt/apt.conf.d/99pgrepl-snapshot"
            conf.write_text('Acquire::Check-Valid-Until "false";\n')
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        from harness.hosts.docker import docker_cli  # the engine the harness reaches (not at import: a cycle)

        imported = subprocess.run([*docker_cli(), "import", "-", profile.base], stdin=tar.stdout, capture_output=True)
        tar.wait()
        if imported.returncode != 0:
            raise ImageUnavailable(f"image {profile.name}: docker import failed: {imported.stderr.decode()[-500:]}")
    return client.images.get(profile.base).id
