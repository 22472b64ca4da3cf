"""Set up once per run: both hosts committed after the runbook's whole setup, for later pairs.

Per (image, backend, setup text): the first pairs run the runbook's setup for real; the second
one (already the first, when the caller says the setup recurs: a test session's unmodified
runbook), once it streams, has both machines stopped cleanly, committed, and started again (a
setup text asked for once only, like a negative control's, is never saved). A later pair of the
same key starts from those images on a network with the same fixed subnet, so the addresses the
runbook bound (pg_hba.conf, primary_conninfo, .pgpass) still hold, with the same generated
passwords, and its setup steps are marked `reused (this run's set-up state)`. The images hold
secrets: only a test session keeps states (`RUN_STATES.open()` in the pytest plugin), and they are
removed when it ends (each worker its own at its session's end, the controller whatever its
workers left); never kept as a cache; a killed run's are swept with its other resources.
A runbook whose setup text differs (a negative control) has another key and runs its setup for
real.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import threading
from dataclasses import dataclass, field

import docker

from harness import ROLES
from harness.images import snapshot_repository
from harness.labels import SETUP_STATE_KIND
from harness.runbook import Block, Skip, StepHook
from harness.secrets import Secret

RESTORED = "this run's set-up state"  # what the transcript says of steps a restored pair did not run
# the transcript's notes of a pair that starts from the state, and of one that saves it (bench counts them)
RESTORED_NOTE = f"setup: both hosts start from {RESTORED} (the runbook's setup ran once already)"
SAVED_NOTE = f"setup: saved as {RESTORED} for the run's later pairs"
COPY_UP_LIST = "/etc/pgrepl-harness-copy-up"  # see images/common/ecs-entrypoint.sh
# Private subnets for pairs that are saved or restored (Docker's default pools are 172.17-31/16
# and 192.168/16); each state has its own /29, so two pairs alive at once never share one.
POOL = ipaddress.ip_network("10.213.0.0/16")
BLOCK = 16


@dataclass
class SetupState:
    subnet: str
    images: dict[str, str] = field(default_factory=dict)  # role -> tag, once committed
    passwords: tuple[Secret, Secret] | None = None  # replication, harness
    in_use: bool = True

    def addresses(self) -> dict[str, str]:
        hosts = list(ipaddress.ip_network(self.subnet).hosts())  # .1 is the gateway (the runner)
        return {role: str(hosts[index + 1]) for index, role in enumerate(ROLES)}


class RunStates:
    """This process's set-up states, by key; hands out a free one (committed if possible)."""

    def __init__(self) -> None:
        self.states: dict[str, list[SetupState]] = {}
        self.requests: dict[str, int] = {}
        self.lock = threading.Lock()
        # each process its own block of subnets (xdist workers, parallel sessions on one engine)
        count = 2 ** (29 - POOL.prefixlen)
        start = (os.getpid() % (count // BLOCK)) * BLOCK
        self.subnets = (
            ipaddress.ip_network((int(POOL.network_address) + 8 * ((start + i) % count), 29)) for i in range(count)
        )
        self.client: docker.DockerClient | None = None
        self.opened = False  # by a test session, which removes the images at its end

    def open(self) -> None:
        """From now on states are kept; whoever opens must call `remove_images` when the run ends."""
        self.opened = True

    def claim(self, key: str, client: docker.DockerClient, *, recurs: bool = False) -> SetupState | None:
        """A state to start from (committed) or to fill (not yet); None for a key's first request,
        unless the caller knows the setup `recurs` in this run (then the first one is saved); None
        always unless opened (a state's images hold secrets: only a run that removes them keeps one)."""
        if not self.opened:
            return None
        with self.lock:
            self.client = client
            self.requests[key] = self.requests.get(key, 0) + 1
            if self.requests[key] == 1 and not recurs:
                return None
            states = self.states.setdefault(key, [])
            free = [s for s in states if not s.in_use]
            state = next((s for s in free if s.images), free[0] if free else None)
            if state is None:
                state = SetupState(str(next(self.subnets)))
                states.append(state)
            state.in_use = True
            return state

    def release(self, state: SetupState) -> None:
        state.in_use = False

    def remove_images(self) -> int:
        """What holds a generated secret does not outlive the run: remove every committed state."""
        removed = 0
        if self.client is None:
            return removed
        with self.lock:
            for states in self.states.values():
                for state in states:
                    for tag in state.images.values():
                        with contextlib.suppress(docker.errors.APIError):
                            self.client.images.remove(tag, force=True)
                            removed += 1
                    state.images = {}
        return removed


RUN_STATES = RunStates()


def state_key(image: str, backend: str, base_tag: str, setup_blocks: list[Block]) -> str:
    digest = hashlib.sha256(f"{image}\0{backend}\0{base_tag}\0".encode())
    for block in setup_blocks:
        digest.update(f"{block.host}\0{block.file}\0{block.body}\0".encode())
    return digest.hexdigest()[:12]


def state_tag(image: str, role: str, key: str, run_id: str) -> str:
    return f"{snapshot_repository(image, role)}-{SETUP_STATE_KIND}:{key}-{run_id}"


class RestoredSetup(StepHook):
    """The setup steps a restored state already holds are recorded, not run."""

    def before(self, block: Block) -> Skip | None:
        return Skip("reused", RESTORED) if block.part == "setup" else None
