"""The session's resources on the Docker engine: labelled with the session's id, removed at its end.

The controller (or a run without xdist) makes the id and hands it to its workers; at the session's
end the controller removes the set-up states (images and registry, harness.runstate: they hold the
session's passwords and serve every worker) and whatever else of the session is left, a crashed
worker's included. Kept pairs (--keep-on-failure) stay.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest

from harness.hosts.docker import answering_engine, remove_orphans, remove_session
from harness.labels import BadHeldSession, held_session, join_session
from harness.runstate import RUN_STATES, remove_registry
from harness.snapshots import BadBudget, budget, remove_unused_snapshots

log = logging.getLogger("pgrepl")
# workerinput key: the controller's session id; workeroutput key: the worker used the engine
SESSION_INPUT = "pgrepl_session"
ENGINE_USED_OUTPUT = "pgrepl_engine_used"


class Session:
    """Registered as `pgrepl-session` in a run of the project.

    A run started by a process that holds a session for several runs (HELD_SESSION_ENV: `mutate`)
    joins that one: its set-up states serve the holder's later runs, which remove them."""

    def __init__(self, config: pytest.Config):
        self.config = config
        workerinput = getattr(config, "workerinput", None)
        try:
            held = held_session()
            budget()  # checked now, not first at the session's end
        except (BadHeldSession, BadBudget) as exc:
            raise pytest.UsageError(str(exc)) from None
        self.held = held is not None
        if workerinput:
            self.id: str = workerinput[SESSION_INPUT]
        else:
            self.id = held[0] if held else uuid.uuid4().hex[:12]
        self.engine_used = False
        join_session(self.id, holder=held[1] if held else None)

    def use_engine(self) -> None:
        """Called when a test first needs the engine: from then on the run keeps set-up states, and the
        session's end removes them and what else is left there."""
        RUN_STATES.open(self.id, recurring=self.held)
        self.engine_used = True
        if hasattr(self.config, "workeroutput"):  # reaches the controller with the worker's end
            self.config.workeroutput[ENGINE_USED_OUTPUT] = True

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """xdist: each worker labels its resources with the controller's session id."""
        node.workerinput[SESSION_INPUT] = self.id

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object | None) -> None:
        """xdist, on the controller: a worker that used the engine, or died (it may have), leaves its
        clean-up to the session's end; a dead worker's containers and set-up states go at once."""
        if error is None and not getattr(node, "workeroutput", {}).get(ENGINE_USED_OUTPUT):
            return
        self.engine_used = True
        if error is not None:
            client = answering_engine()
            if client is not None:  # its process is gone: remove_orphans judges it killed
                removed = remove_orphans(client)
                log.warning("worker %s died (%s): removed %d of its resources", node.gateway.id, error, removed)

    @pytest.hookimpl(tryfirst=True)  # on a worker: before xdist reports the worker finished
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Nothing holding a secret outlives the session."""
        if not self.engine_used or hasattr(self.config, "workerinput") or self.held:
            return  # set-up states may still serve other workers or runs: the controller or holder removes them
        remove_registry(self.id)
        client = answering_engine()
        if client is None:
            log.warning("the Docker engine does not answer: the session's resources are left to the next run's sweep")
            return
        remove_session(client, self.id)
        remove_unused_snapshots(client, log=log.info)
