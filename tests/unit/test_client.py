"""The client's side of a request to the supervisor."""

from __future__ import annotations

import pytest
from hako import client, lean


def test_a_retry_answered_before_the_request_was_sent_is_read_not_lost() -> None:
    # A supervisor on its way out answers pending connections "retry" and
    # closes them, possibly before the client has written its request.
    ours, theirs = lean.socketpair()
    lean.send_fds(theirs, lean.dumps({"retry": True}).encode(), ())
    theirs.close()
    with pytest.raises(client.SupervisorGone):
        client.exchange(ours, {"op": "run"})
    ours.close()


def test_a_connection_closed_without_an_answer_is_an_error() -> None:
    ours, theirs = lean.socketpair()
    theirs.close()
    with pytest.raises(client.HakoError, match="closed the connection"):
        client.exchange(ours, {"op": "run"})
    ours.close()
