"""Node.psql_from and replicate_from report the server's answer, not a connection that got none."""

from __future__ import annotations

from harness.hosts.base import Result
from harness.layout import layout_for
from harness.pair import Node
from harness.secrets import Secret

TIMED_OUT = Result(2, "", 'psql: error: connection to server at "10.0.0.2", port 5432 failed: timeout expired\n')
REFUSED = Result(2, "", 'psql: error: ... FATAL:  no pg_hba.conf entry for host "10.0.0.2", user "reader"\n')


class Client:
    """A client host whose psql gets the given results in turn (the last one from then on)."""

    name, url, address = "secondary", "test://secondary", "10.0.0.2"

    def __init__(self, *results: Result):
        self.results, self.runs = list(results), 0

    def run(self, script: str, **kwargs) -> Result:
        self.runs += 1
        return self.results.pop(0) if len(self.results) > 1 else self.results[0]


def server() -> Node:
    return Node(Client(Result(0, "", "")), layout_for("debian", 18), Secret("unused-password"))


def test_a_connection_that_timed_out_is_tried_again_until_the_server_answers():
    client = Client(TIMED_OUT, TIMED_OUT, REFUSED)
    answer = server().psql_from(client, "SELECT 1", user="reader", password=Secret.generate())
    assert answer is REFUSED and client.runs == 3


def test_a_refusal_is_the_answer_at_once():
    client = Client(REFUSED)
    assert server().replicate_from(client, user="replica_user", password=Secret.generate()) is REFUSED
    assert client.runs == 1


def test_after_the_deadline_the_last_non_answer_is_returned_for_the_test_to_show():
    client = Client(TIMED_OUT)
    assert server().answer_to(client, "psql\n", timeout=0.2) is TIMED_OUT
    assert client.runs >= 1
