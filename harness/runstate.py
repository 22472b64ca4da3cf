"""Set up once per test session: both hosts committed after the runbook's whole setup, for every
later pair of the same key, in any of the session's processes (xdist workers).

Per (image, backend, setup text), one process sets the pair up for real and, once it streams, has
both machines stopped cleanly, committed and started again (a setup text asked for once only in a
process, like a negative control's, is not saved: its key's first request sets up without saving,
unless the caller says the setup recurs; a state saved already is restored by any request of its
key). Every later pair of that key, in whichever worker, starts from those images: on a network of
its own, at addresses of its own, which the machines' entry wrapper writes over the saved ones in the
files that hold them before anything boots (listed at the save: pg_hba.conf, primary_conninfo,
.pgpass; images/common/ecs-entrypoint.sh), with the same generated passwords; its setup steps are
marked `reused (this run's set-up state)`.

The session's registry says which key is saved, being saved (the others wait for it: one real setup,
whatever the worker count) or free to take: a JSON file under a lock (fcntl) in a private directory
of the session, `SESSIONS_ROOT/<session id>` (mode 700; it holds the passwords, so it is removed
with the session, and a killed session's by the next run's sweep). The images hold secrets too: the
session's controller removes them at its end (harness.hosts.docker.remove_session), never a worker,
which could still be needed by another; a killed run's are swept with its other resources.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import shutil
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from harness import CACHE_ROOT, ROLES
from harness.gate import block_text
from harness.images import snapshot_repository
from harness.labels import SETUP_STATE_KIND, alive, owner
from harness.runbook import Block, Runbook, Skip, StepHook
from harness.secrets import Secret
from harness.waiting import WaitTimeout, wait_until

RESTORED = "this run's set-up state"  # what the transcript says of steps a restored pair did not run
# the transcript's notes of a pair that starts from the state, and of one that saves it (bench counts them)
RESTORED_NOTE = f"setup: both hosts start from {RESTORED} (the runbook's setup ran once already)"
SAVED_NOTE = f"setup: saved as {RESTORED} for the run's later pairs"
COPY_UP_LIST = "/etc/pgrepl-harness-copy-up"  # see images/common/ecs-entrypoint.sh
READDRESS_LIST = "/etc/pgrepl-harness-readdress"  # the files holding the pair's addresses; ditto
READDRESS_VAR = "PGREPL_READDRESS"  # "OLD=NEW ..." for the entry wrapper
SESSIONS_ROOT = CACHE_ROOT / "sessions"
# Private subnets for restored pairs (Docker's default pools are 172.17-31/16 and 192.168/16): each
# pair its own /29, from a block of its process's (xdist workers, parallel sessions on one engine).
POOL = ipaddress.ip_network("10.213.0.0/16")
BLOCK = 16
# How long a process waits for another to save the state it needs before setting up for real itself.
SAVE_WAIT = 900.0


@dataclass(frozen=True)
class SetupState:
    images: dict[str, str]  # role -> committed image
    addresses: dict[str, str]  # role -> the address the runbook bound; "gateway" -> the runner's
    passwords: tuple[Secret, Secret]  # replication, harness


@dataclass(frozen=True)
class Claim:
    """What a pair of `key` does: start from `state` (saved), or set up for real and, if `saves`,
    save it for the others."""

    key: str
    state: SetupState | None = None
    saves: bool = False


def subnet_addresses(subnet: str) -> dict[str, str]:
    """The machines' addresses on a fixed subnet (in start order from .2; .1 is the gateway)."""
    hosts = list(ipaddress.ip_network(subnet).hosts())
    return {"gateway": str(hosts[0]), **{role: str(hosts[index + 1]) for index, role in enumerate(ROLES)}}


class RunStates:
    """This process's view of the session's set-up states."""

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}
        self.lock = threading.Lock()
        count = 2 ** (29 - POOL.prefixlen)
        start = (os.getpid() % (count // BLOCK)) * BLOCK
        self._subnets = (
            ipaddress.ip_network((int(POOL.network_address) + 8 * ((start + i) % count), 29)) for i in range(count)
        )
        self.directory: Path | None = None  # the session's registry, once opened
        self.recurring = False

    def open(self, session: str, *, recurring: bool = False) -> None:
        """From now on states are kept, in session `session`'s registry (its controller removes it,
        remove_registry, and the images at the session's end). `recurring`: every setup recurs (a held
        session, whose holder runs the same modules again: each setup is saved at its first request)."""
        self.directory = open_registry(session)
        self.recurring = recurring

    def next_subnet(self) -> str:
        with self.lock:
            return str(next(self._subnets))

    @contextlib.contextmanager
    def _registry(self) -> Iterator[dict]:
        """The registry, read and written under the session's lock."""
        assert self.directory is not None
        with open(self.directory / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            path = self.directory / "states.json"
            data = json.loads(path.read_text()) if path.is_file() else {}
            yield data
            temporary = path.with_suffix(".tmp")
            with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
                json.dump(data, out)
            temporary.replace(path)

    def claim(
        self, key: str, *, recurs: bool = False, may_save: bool = True, exists=lambda image: True
    ) -> Claim | None:
        """How a pair of `key` starts. A saved state (whoever saved it) is restored; `exists` says whether its
        images are still there (a dead worker's may have been swept). Else None: set up for real, save nothing
        (states not kept in this run, or the key's first request in this process and its setup not known to
        recur: a negative control's edit of the setup; the fixtures say a later part's edit recurs). A
        state being saved by another live process is waited for. `may_save=False`: this pair's machines
        must not become the state (they have shared storage mounted, which a commit leaves out), yet they
        may start from it and wait for it."""
        if self.directory is None:
            return None
        with self.lock:
            self.requests[key] = self.requests.get(key, 0) + 1
            saves = recurs or self.recurring or self.requests[key] > 1
        outcome: Claim | None = None

        def decided() -> bool:
            nonlocal outcome
            with self._registry() as data:
                entry = data.get(key)
                images = (entry or {}).get("images")
                if images and all(exists(image) for image in images.values()):
                    passwords = (Secret(entry["passwords"][0]), Secret(entry["passwords"][1]))
                    outcome = Claim(key, SetupState(images, entry["addresses"], passwords))
                    return True
                if not saves:
                    return True
                if entry is not None and not images and alive(entry["owner"]):
                    return entry["owner"] == os.getpid()  # being saved: by another process (wait) or this one
                if not may_save:
                    return True  # nobody saves it: set up for real
                # free, its saver died, or its images are gone (swept after it died): this process saves it
                data[key] = {"owner": os.getpid()}
                outcome = Claim(key, saves=True)
                return True

        try:
            wait_until(decided, timeout=SAVE_WAIT, interval=0.5, what=f"another worker to save set-up state {key}")
        except WaitTimeout:
            return None
        return outcome

    def saved(self, key: str, state: SetupState) -> None:
        with self._registry() as data:
            data[key] = {
                "owner": os.getpid(),
                "images": state.images,
                "addresses": state.addresses,
                "passwords": [str(p) for p in state.passwords],
            }

    def abandon(self, claim: Claim) -> None:
        """A claim to save that was not saved (the bring-up failed): free for another process. Nothing to free
        when the session's registry is gone already (an interrupted run's controller removed it first)."""
        if self.directory is None or not claim.saves:
            return
        with contextlib.suppress(FileNotFoundError), self._registry() as data:
            entry = data.get(claim.key)
            if entry and entry["owner"] == os.getpid() and not entry.get("images"):
                del data[claim.key]


RUN_STATES = RunStates()


def open_registry(session: str) -> Path:
    """Session `session`'s registry, made if new, with this process among its users (it is not stale
    while one of them lives: remove_stale_registries)."""
    directory = SESSIONS_ROOT / session
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(directory / "processes", "a") as processes:
        processes.write(f"{owner()} {os.getpid()}\n")
    return directory


def remove_registry(session: str) -> None:
    """The session ended: its registry (with the passwords) goes."""
    shutil.rmtree(SESSIONS_ROOT / session, ignore_errors=True)


def remove_stale_registries() -> None:
    """Registries of sessions killed before their end: every process of this owner that opened one
    is gone."""
    if not SESSIONS_ROOT.is_dir():
        return
    for directory in SESSIONS_ROOT.iterdir():
        try:
            opened = [line.split() for line in (directory / "processes").read_text().splitlines()]
        except OSError:
            continue
        if opened and all(who == owner() and not alive(int(pid)) for who, pid in opened):
            shutil.rmtree(directory, ignore_errors=True)


def restorable_with(mounts: Iterable[str], setup_blocks: list[Block]) -> bool:
    """Whether a pair with shared storage mounted at `mounts` may start from a set-up state: a commit
    leaves a volume out, so not when a setup block names one of its paths in its text or as the file it
    writes (and may have written there)."""
    return not any(path in block.body + (block.file or "") for block in setup_blocks for path in mounts)


def same_setup(book: Runbook, other: Runbook) -> bool:
    """Whether two runbooks set a pair up alike (their setup blocks and bindings): an edit of a later part
    (a test's, a negative control's) has the session runbook's setup, which therefore recurs."""

    def setup(runbook: Runbook) -> tuple:
        return tuple(block_text(b) for b in runbook.blocks if b.part == "setup"), runbook.bindings

    return setup(book) == setup(other)


def state_key(image: str, backend: str, base_tag: str, setup_blocks: list[Block]) -> str:
    digest = hashlib.sha256(f"{image}\0{backend}\0{base_tag}\0".encode())
    for block in setup_blocks:
        digest.update(f"{block.host}\0{block.file}\0{block.body}\0".encode())
    return digest.hexdigest()[:12]


def state_tag(image: str, role: str, key: str, run_id: str) -> str:
    return f"{snapshot_repository(image, role)}-{SETUP_STATE_KIND}:{key}-{run_id}"


def readdress(old: dict[str, str], new: dict[str, str]) -> str:
    """The entry wrapper's READDRESS_VAR value: each saved address and the one replacing it."""
    return " ".join(f"{old[name]}={new[name]}" for name in old if old[name] != new[name])


class RestoredSetup(StepHook):
    """The setup steps a restored state already holds are recorded, not run."""

    def before(self, block: Block) -> Skip | None:
        return Skip("reused", RESTORED) if block.part == "setup" else None
