"""Attack: a swarm of scripted sessions from one address swings a study (issue 12, "Results that one client
cannot swing").

The attacker of the issue: six sessions from one address, 4.3 s per vote, each always picking the clip with
more motion, answering every attention check correctly. Here it runs over HTTP against the real app (the JSON
API, as a script would) beside an honest cohort whose votes split evenly. Time is a hand-moved clock
(``tests/support/clock.py``), so "4.3 s per vote" is what the server measures, with no sleeping. The attacker
is modelled as perfect: it recognises checks and the pushed model from the pixels, which the test stands in
for by reading the database.

The bar: the swarm is refused beyond the study's sessions per address; let in by a raised limit, it is flagged
and the results (flagged left out) do not move; a lab's honest sessions behind one address are let in by that
setting and not flagged.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.db import database_key, get_sessionmaker
from app.main import create_app
from app.models import Assignment, Clip, Evaluator, Pair, StudyModel
from app.services.attention import CHECK_DEGRADED, CHECK_SAME, ensure_attention_pairs
from app.services.qc import CLUSTER_REASON
from app.services.rejudging import REJUDGING
from app.services.results_cache import get_results
from tests.factories import make_pairs, make_study
from tests.support import clock as fake_clock

SWARM_IP = "203.0.113.66"
SWARM_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
PUSHED = "lightning"  # "the clip with more motion", as the attacker judges it from the pixels
OTHER = "animatediff"
SECONDS_PER_VOTE = 4.3
N_HONEST = 20


@dataclass
class Shown:
    kind: str
    left_model: str
    original_left: bool  # check_degraded: the original clip (clip_a) is on the left


def shown(token: str) -> Shown:
    """What the pixels would tell a perfect attacker: the pair's kind and which model is on the left."""
    with get_sessionmaker()() as s:
        a = s.scalar(select(Assignment).where(Assignment.token == token))
        pair = s.get(Pair, a.pair_id)
        model = s.scalar(select(StudyModel.name).join(Clip, Clip.model_id == StudyModel.id)
                         .where(Clip.id == a.left_clip_id))
        return Shown(pair.kind, model, a.left_clip_id == pair.clip_a_id)


def check_answer(seen: Shown, keys: list[str]) -> dict[str, str] | None:
    """The honest answer of an attention check (None for a normal pair)."""
    if seen.kind == CHECK_SAME:
        return dict.fromkeys(keys, "tie")
    if seen.kind == CHECK_DEGRADED:
        return dict.fromkeys(keys, "left" if seen.original_left else "right")
    return None


def side_of(model: str, seen: Shown) -> str:
    return "left" if seen.left_model == model else "right"


Policy = Callable[[Shown, list[str], int], dict[str, str]]


def pushing(seen: Shown, keys: list[str], n: int) -> dict[str, str]:
    return check_answer(seen, keys) or dict.fromkeys(keys, side_of(PUSHED, seen))


def even_handed(seen: Shown, keys: list[str], n: int) -> dict[str, str]:
    """An honest-looking rater of two equally good models: one model, then the other, on its normal pairs."""
    return check_answer(seen, keys) or dict.fromkeys(keys, side_of(PUSHED if n % 2 else OTHER, seen))


def even_handed_other_first(seen: Shown, keys: list[str], n: int) -> dict[str, str]:
    """``even_handed`` starting with the other model: a session with an odd number of normal pairs (the checks
    take random slots) leans one vote one way, and the cohort's halves lean opposite ways."""
    return check_answer(seen, keys) or dict.fromkeys(keys, side_of(OTHER if n % 2 else PUSHED, seen))


def honest_rater(i: int) -> Callable[[Shown, list[str], int], dict[str, str]]:
    return even_handed if i % 2 else even_handed_other_first


def mirrored_coin_rater(i: int) -> Policy:
    """An honest rater of two equally good models whose normal pairs go to either model by a coin (fixed per pair of
    sessions), session 2k+1 choosing exactly opposite to session 2k: the cohort nets to zero, but its sessions
    lean, as people do. Raters who all split exactly evenly (``even_handed`` over an even number of normal pairs,
    which every session of 8 pairs now has beside its two checks) make the study's spread collapse, and then any
    lean at all, two pushing sessions included, reads as significant."""
    coins = random.Random(20261207 + i // 2)
    flips = [coins.random() < 0.5 for _ in range(64)]

    def policy(seen: Shown, keys: list[str], n: int) -> dict[str, str]:
        toward_pushed = flips[n] != bool(i % 2)
        return check_answer(seen, keys) or dict.fromkeys(keys, side_of(PUSHED if toward_pushed else OTHER, seen))

    return policy


@dataclass
class Session:
    http: TestClient
    policy: Policy
    headers: dict[str, str] = field(default_factory=dict)
    normal_votes: int = 0


def client(app, ip: str, user_agent: str) -> TestClient:
    return TestClient(app, client=(ip, 40000), headers={"user-agent": user_agent})


def join(http: TestClient, invite: str):
    return http.post("/api/v1/evaluate/join", json={"invite_token": invite})


def start(app, invite: str, ip: str, policy: Policy, user_agent: str = "Mozilla/5.0 honest") -> Session:
    http = client(app, ip, user_agent)
    r = join(http, invite)
    assert r.status_code == 201, r.text
    return Session(http, policy, {"X-Evaluator-Token": r.json()["evaluator_token"]})


def rate_all(sessions: list[Session], clock: fake_clock.FakeClock, *, leave_one_short: bool = False) -> None:
    """Every session rates its pairs to the end (or, ``leave_one_short``, all but the last: a session that never
    completes), the sessions taking turns, each vote 4.3 s after its page."""
    active = list(sessions)
    while active:
        for s in list(active):
            body = s.http.get("/api/v1/evaluate/pair", headers=s.headers).json()
            if body["status"] == "done" or (leave_one_short and body["done"] == body["total"] - 1):
                active.remove(s)
                continue
            pair = body["pair"]
            seen = shown(pair["assignment_token"])
            keys = [c["key"] for c in pair["criteria"]]
            choices = s.policy(seen, keys, s.normal_votes)
            s.normal_votes += seen.kind == "normal"
            clock.advance(SECONDS_PER_VOTE)
            r = s.http.post("/api/v1/evaluate/votes", headers=s.headers,
                            json={"assignment_token": pair["assignment_token"], "choices": choices})
            assert r.status_code == 200 and r.json()["status"] == "recorded", r.text


def target(session, **qc):
    # The reliability rule is off: these raters answer without regard to the clips (two equally good models),
    # and the rule flags an honest rater at its level, 0.001 per rater: one of these 20 in about 3% of runs,
    # since the database's random() breaks the ties of the pair choice and no seed fixes it. Its error rate on
    # honest raters is measured by bench/qc.py (tests/app/services/test_qc_simulation.py); here the address
    # rules are under test.
    study = make_study(session, n_prompts=16, pairs_per_session=8, votes_per_pair=100,
                       qc={"attention_rate": 0.25, "reliability_alpha": 0.0, **qc})
    make_pairs(session, study)
    assert ensure_attention_pairs(session, study_id=study.id) > 0
    session.commit()
    return study


def flags() -> dict[str, list[str]]:
    """Address kind ('swarm' or 'honest') -> every reason given to its sessions, as the dashboard shows them:
    after the study-wide re-judgings the spacing held back (app/services/rejudging.py) are settled."""
    with get_sessionmaker()() as s:
        REJUDGING.settle((database_key(s),))
        rows = s.execute(select(Evaluator.user_agent, Evaluator.flag_reasons)).all()
    out: dict[str, list[str]] = {"swarm": [], "honest": []}
    for agent, reasons in rows:
        out["swarm" if agent == SWARM_UA else "honest"].extend(reasons or [])
    return out


def significant(study_id: int) -> list[str]:
    with get_sessionmaker()() as s:
        res = get_results(s, study_id=study_id).results
    return [r["criterion"] for r in res["criteria"] + res["overall"] if r["significant"]]


@pytest.fixture
def app(engine):
    return create_app()


@pytest.fixture
def clock(monkeypatch):
    return fake_clock.install(monkeypatch)


def test_a_swarm_from_one_address_is_held_to_the_study_limit(app, session, clock):
    study = target(session)  # the default: 2 sessions per address
    honest = [start(app, study.invite_token, f"198.51.100.{i + 1}", mirrored_coin_rater(i)) for i in range(N_HONEST)]
    swarm_http = client(app, SWARM_IP, SWARM_UA)
    answers = [join(swarm_http, study.invite_token) for _ in range(6)]
    assert [r.status_code for r in answers] == [201, 201, 403, 403, 403, 403]
    refusal = answers[2].json()["detail"]
    assert "network" in refusal and "sessions per address" in refusal  # says what happened and what to do
    page = client(app, SWARM_IP, SWARM_UA).get(f"/join/{study.invite_token}")
    assert page.status_code == 403 and "ask the researcher" in page.text  # the invite page says so at once
    swarm = [Session(swarm_http, pushing, {"X-Evaluator-Token": r.json()["evaluator_token"]}) for r in answers[:2]]
    rate_all(honest + swarm, clock)

    assert not flags()["honest"]
    assert not significant(study.id) or flags()["swarm"], "two pushing sessions decided the study unflagged"
    with get_sessionmaker()() as s:
        assert s.query(Evaluator).count() == N_HONEST + 2  # nothing was started for the refused joins


def test_a_swarm_let_in_by_a_raised_limit_is_flagged_and_moves_nothing(app, session, clock, monkeypatch):
    # Where the attention checks fall is drawn from the assignment service's generator: a fixed one makes the
    # honest cohort's votes the same on every run (its balance depends on it).
    import random

    from app.services import assignments

    monkeypatch.setattr(assignments, "_rng", random.Random(20261206))
    study = target(session, sessions_per_address=10)
    honest = [start(app, study.invite_token, f"198.51.100.{i + 1}", honest_rater(i)) for i in range(N_HONEST)]
    swarm = [start(app, study.invite_token, SWARM_IP, pushing, SWARM_UA) for _ in range(6)]
    rate_all(honest[:10] + swarm + honest[10:], clock)

    found = flags()
    assert not found["honest"], found["honest"]
    with get_sessionmaker()() as s:
        swarm_rows = s.execute(select(Evaluator.flagged, Evaluator.flag_reasons)
                               .where(Evaluator.user_agent == SWARM_UA)).all()
    assert len(swarm_rows) == 6 and all(flagged for flagged, _ in swarm_rows)
    assert all(any(r.startswith(CLUSTER_REASON) for r in reasons) for _, reasons in swarm_rows)
    assert "lightning" in swarm_rows[0][1][0] and "100%" in swarm_rows[0][1][0]  # what they did, in words
    assert not significant(study.id)  # flagged sessions are left out of the results


def test_a_lab_behind_one_address_is_let_in_by_the_study_setting_and_not_flagged(app, session, clock, monkeypatch):
    # A fixed generator for sides and check slots: left to chance, a rule-voting session whose chosen model sat on
    # the left all 8 times (about 1 in 13 runs over 20 sessions) was rightly flagged as straight-lining.
    import random

    from app.services import assignments

    monkeypatch.setattr(assignments, "_rng", random.Random(7))
    default = target(session)
    lab_door = [join(client(app, "192.0.2.10", f"Mozilla/5.0 lab-machine-{i}"), default.invite_token)
                for i in range(3)]
    assert [r.status_code for r in lab_door] == [201, 201, 403]  # without the setting, the lab is held at two
    study = target(session, sessions_per_address=8)
    lab = [start(app, study.invite_token, "192.0.2.10", even_handed, f"Mozilla/5.0 lab-machine-{i % 3}")
           for i in range(6)]
    others = [start(app, study.invite_token, f"198.51.100.{i + 1}", even_handed) for i in range(14)]
    rate_all(lab + others, clock)
    assert not flags()["honest"]
    with get_sessionmaker()() as s:
        assert s.query(Evaluator).filter(Evaluator.flagged.is_(True)).count() == 0


def test_a_swarm_that_never_completes_is_flagged_even_after_the_server_restarts(app, session, clock, monkeypatch):
    """The swarm votes right after a re-judging, so the spacing owes the rest, and never completes a session (a
    completion's re-judging is never held back); then the web process stops, or the results are read in another
    one. What that process owed is in the database: the next process's results judge the swarm before counting."""
    import random

    from app.services import assignments, qc
    from app.services.rejudging import Rejudging

    monkeypatch.setattr(assignments, "_rng", random.Random(20261206))
    study = target(session, sessions_per_address=10)
    # A busy study's spacing: after one re-judging (here the honest sessions' completions, which are never held
    # back), every trigger is held back for as long as the test runs.
    monkeypatch.setattr(qc, "REJUDGING", Rejudging(cheap_s=0.0, spacing=1e9))
    honest = [start(app, study.invite_token, f"198.51.100.{i + 1}", honest_rater(i)) for i in range(N_HONEST)]
    rate_all(honest, clock)
    swarm = [start(app, study.invite_token, SWARM_IP, pushing, SWARM_UA) for _ in range(6)]
    rate_all(swarm, clock, leave_one_short=True)
    with get_sessionmaker()() as s:
        unjudged = s.scalars(select(Evaluator.flagged).where(Evaluator.user_agent == SWARM_UA)).all()
    assert len(unjudged) == 6 and not any(unjudged)  # the gap this test is about: the swarm's judging is owed

    monkeypatch.setattr(qc, "REJUDGING", Rejudging())  # a new process, which owes nothing in memory
    assert not significant(study.id)  # the results settle the debt first, and leave the flagged swarm out
    with get_sessionmaker()() as s:
        swarm_rows = s.execute(select(Evaluator.flagged, Evaluator.flag_reasons)
                               .where(Evaluator.user_agent == SWARM_UA)).all()
    assert all(flagged and any(r.startswith(CLUSTER_REASON) for r in reasons) for flagged, reasons in swarm_rows)
