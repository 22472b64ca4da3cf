#!/bin/sh
# What a CI runner's job does, as its (non-root) user, in a copy of the checkout: the template's
# steps with actions/checkout replaced by that copy and setup-python by the machine's python3.
# tools/runner_vm.py runs it inside the runner-like VM; arguments go to pytest.
set -eu
python3 -m venv .venv
.venv/bin/pip install -q -e '.[test]'
exec .venv/bin/python -m pytest "$@"
