"""Where the project is: the directory holding `runbooks/` and `images/` (and `scenarios/`).

The harness's code may be installed anywhere (a wheel in site-packages, an editable checkout);
the runbooks, image profiles and scenarios it works on belong to a project directory, found as
pytest finds its rootdir: the given directory or the first of its parents that holds `runbooks/`
and `images/`. Chosen once per process (`--project DIR`, pytest's rootdir, or the current
directory), falling back to the checkout the harness runs from when that is a project (an
editable install). Cheap to import: no Docker SDK, no psycopg.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError

# the directories that make a directory a project (scenarios/ is optional: the gate reads it)
MARKERS = ("runbooks", "images")
DEFAULT_RUNBOOK_NAME = "postgresql-primary-secondary.md"
# where the harness's own code lives; a project too when it is a checkout (editable install)
CHECKOUT = Path(__file__).resolve().parent.parent


class NoProject(HarnessError):
    """Neither the given directory nor its parents hold runbooks/ and images/."""


@dataclass(frozen=True)
class Project:
    root: Path

    @property
    def runbooks(self) -> Path:
        return self.root / "runbooks"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def scenarios(self) -> Path:
        return self.root / "scenarios"

    @property
    def default_runbook(self) -> Path:
        return self.runbooks / DEFAULT_RUNBOOK_NAME

    def image_names(self) -> list[str]:
        """Names of the image profiles under images/ (images/NAME/image.toml)."""
        return sorted(p.parent.name for p in self.images.glob("*/image.toml"))


def find_root(start: Path) -> Path | None:
    """`start` or the nearest of its parents that holds every one of MARKERS, or None."""
    start = start.resolve()
    return next((d for d in (start, *start.parents) if all((d / m).is_dir() for m in MARKERS)), None)


def locate(start: Path | None = None, *, fallback: bool = True) -> Project:
    """The project at or above `start` (default: the current directory), else (with `fallback`) the
    harness's own checkout when it is one; NoProject (one line: what is needed, how to give it)."""
    start = Path.cwd() if start is None else Path(start)
    root = find_root(start) or (find_root(CHECKOUT) if fallback else None)
    if root is None:
        raise NoProject(
            f"no pgrepl-harness project at {start} or above: a project is a directory with "
            f"{' and '.join(m + '/' for m in MARKERS)} (a checkout of pgrepl-harness, or your repository "
            "laid out like it); run from inside one, or name it (pgrepl-harness --project DIR, pytest --rootdir DIR)"
        )
    return Project(root)


_current: Project | None = None


def choose(chosen: Project) -> Project:
    """Make `chosen` this process's project."""
    global _current
    _current = chosen
    return chosen


def use(directory: Path | str | None = None) -> Project:
    """Make the project at or above `directory` (`--project`: no fallback), or else the one
    `locate` finds from the current directory, this process's."""
    if directory is not None and not Path(directory).is_dir():
        raise NoProject(f"--project {directory}: no such directory")
    return choose(locate() if directory is None else locate(Path(directory), fallback=False))


def current() -> Project:
    """This process's project, located from the current directory on first use."""
    return _current if _current is not None else use()
