"""50 evaluators at once against the real server, on SQLite and PostgreSQL (issue 5, reliability).

Each evaluator rates 20 pairs, with random double submits and resubmits. Afterwards: no response was a
5xx, every acknowledged vote is stored exactly once with the answers that were sent, every session is
complete with no pair seen twice, and each pair's left/right counterbalancing holds (within one).
"""

from __future__ import annotations

import time

import pytest

from tests.conftest import BACKENDS
from tests.reliability.conftest import N_EVALUATORS, VOTES_EACH
from tests.reliability.harness import Behaviour, Tally, check_database, run_async, run_crowd

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_many_evaluators_at_once(live_server, load_study, database_url, db_backend, record_property):
    tally = Tally()
    started = time.perf_counter()
    errors = run_async(run_crowd(live_server.url, load_study.invite_token, N_EVALUATORS, tally, seed=1,
                                   behaviour=Behaviour()))
    elapsed = time.perf_counter() - started
    # Reported, not asserted (no timed assertions): the figures behind docs/operations.md.
    requests = sum(tally.statuses.values())
    summary = (f"{db_backend}: {N_EVALUATORS} evaluators, {len(tally.acked)} votes, {requests} requests in "
               f"{elapsed:.1f} s = {len(tally.acked) / elapsed:.1f} votes/s, {requests / elapsed:.1f} requests/s")
    record_property("throughput", summary)
    print(summary)
    assert not errors, f"{len(errors)} evaluators failed, first: {errors[0]!r}\n{live_server.log_tail()}"
    assert not tally.server_errors, tally.server_errors[:5]
    assert tally.finished == set(range(N_EVALUATORS))
    # Double submits really happened, and the API answered exactly one of each pair of posts "recorded".
    assert tally.statuses[200] and tally.statuses[303]
    assert all(n == 1 for n in tally.recorded_responses.values()), "a vote was recorded twice"
    check_database(database_url, tally, study_id=load_study.id, n_evaluators=N_EVALUATORS, votes_each=VOTES_EACH)
