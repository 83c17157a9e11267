"""How reliable each rater is, judged from all their answers: agreement with the other raters' consensus.

The estimate. Every answer is to an *item*: one criterion of one pair. For a real pair, the other raters'
answers to the same item form its leave-one-out consensus, a distribution over the pair's clip A, clip B and
"indistinguishable" (in *model* space: which clip, not which side of the screen), shrunk toward the study's
distribution for that criterion by a Dirichlet prior of weight ``prior_weight`` (a pair with one other vote
says little). For an attention check the honest answer is known and the consensus is that answer with
probability ``check_accuracy``. A rater's answer scores the probability the consensus gives it. Under the
hypothesis that this rater answers like the others do (an honest rater of the same study), an answer's score
has a known mean (sum of p^2) and variance, so the rater's total score gives a one-sided z statistic; the
reliability reported is (observed - chance) / (expected - chance): 1 for a rater as consistent with the
others as the others are, 0 for one no better than a coin with three faces.

This is agreement with the leave-one-out consensus, the measure Snow et al. used to compare crowd workers with
experts ("Cheap and Fast - But is it Good?", EMNLP 2008, sec. 4: each annotator against the average of the
others), made a test by scoring against the consensus's own spread. Model-based alternatives were weighed:
MACE (Hovy et al., "Learning Whom to Trust with MACE", NAACL 2013) and Dawid-Skene (1979) posit one true label
per item and explain disagreement as spam; where the two models are equally good there is no true label, EM
drifts to "everyone is a spammer", and honest raters of a close study would be flagged. Here a study without a
consensus judges nobody: every answer scores what the null expects (z near 0).

What carelessness looks like to it: a random clicker scores 1/3 an item where the others agree; a clicker who
favours one side of the screen answers in model space at random (the sides are counterbalanced); an always
"indistinguishable" rater scores the consensus's share of ties, small when the clips differ. Two guards keep
honest raters out:
- One vote is one unit of evidence: the criteria of a vote are answered together (a rater who disagrees on
  overall quality usually disagrees on the rest), so a vote's score is the mean over its criteria and its
  spread is taken as if they were perfectly correlated (the mean of their standard deviations), never six
  independent answers.
- The reference is the study's own raters (``standardized``), not the formula's null alone: a consensus
  estimated from a handful of answers overstates what anyone can match, for every rater alike.
- A rater who prefers one model consistently (``lean``: the share of their decided answers on real pairs that
  go to the model they choose most) is answering by content, not carelessly, even against the consensus:
  taste is not carelessness, and the caller should not flag such a rater on this score.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

CHOICES = ("a", "b", "tie")
# Fewer raters than this with enough votes, and the study's spread is not known well enough to judge anyone.
MIN_RATERS = 8
# The floor of one vote's spread of score under the null: a clear consensus (0.86 against 0.14, some ties) has
# about 0.27 and a check's known answer 0.26, so only votes on near-even items are held to it.
MIN_VOTE_SD = 0.2
# The floor of the study's spread of z (see ``standardized``). Under "answers like the others" a rater's z has a
# spread of at most 1 (the vote's criteria taken as perfectly correlated overstates it); simulated honest raters
# spread 0.7. Raters who vote by rule (the swarm test's honest cohort) spread far less, and at a floor of 0.5 one
# of them drew a flag for a raw z 2 below the others'.
MIN_SCALE = 0.75


@dataclass(frozen=True)
class Answer:
    """One rater's answer to one criterion of one pair, in model space.

    ``choice``: 'a' (the pair's clip A), 'b' or 'tie'. ``known``: for an attention check, the honest answer in
    the same terms ('a' for "the original", 'tie' on a same-clip check); ``None`` for a real pair.
    ``model_a`` / ``model_b``: the models of clip A and clip B (for the lean; a check's are the same model).
    """

    rater: int
    vote: int
    pair: int
    criterion: str
    choice: str
    model_a: int
    model_b: int
    known: str | None = None


@dataclass(frozen=True)
class Reliability:
    """One rater's agreement with the others, summed over votes (each vote one unit)."""

    rater: int
    votes: int
    observed: float  # sum over votes of the mean probability the consensus gave the rater's answers
    expected: float  # the same under "answers like the others" (sum of p^2)
    chance: float  # the same for a uniformly random rater (1/3 a vote)
    sd: float  # spread of ``observed`` under "answers like the others"
    decided: int  # decided answers (not tie) on real pairs
    lean: float  # share of those going to the model this rater chose most (0 when none decided)

    @property
    def z(self) -> float:
        """How far below (negative) or above the expected agreement, in standard deviations of the null."""
        if self.sd <= 0:
            return 0.0
        return (self.observed - self.expected) / self.sd

    @property
    def reliability(self) -> float:
        """(observed - chance) / (expected - chance): 1 answers like the others, 0 like a coin; nan when the
        consensus is itself at chance (nothing to judge by)."""
        room = self.expected - self.chance
        if room <= 1e-9:
            return math.nan
        return (self.observed - self.chance) / room


@dataclass(frozen=True)
class AnswerTable:
    """Answers as columns of integers, one numpy array each: what a study's answers are read into for the
    reliability rule (``app.services.qc.study_answers``).

    The rule re-judges the whole study inside the web process, and the votes in flight wait out its length (issue
    16). One ``Answer`` object per answer, judged one by one, took about 0.5 s for the estimate alone at 20,000
    votes (108,000 answers); on these columns it takes 0.04-0.06 s (bench/rejudging.py). ``choice`` holds 0, 1, 2 for
    CHOICES ('a', 'b', 'tie'); ``known`` the same for a check's honest answer and -1 on a real pair;
    ``criterion`` any integer that names the criterion (its id). ``from_answers`` and ``from_columns`` build one
    from words.
    """

    rater: np.ndarray
    vote: np.ndarray
    pair: np.ndarray
    criterion: np.ndarray
    choice: np.ndarray
    model_a: np.ndarray
    model_b: np.ndarray
    known: np.ndarray

    def __post_init__(self) -> None:
        lengths = {len(getattr(self, f)) for f in ("rater", "vote", "pair", "criterion", "choice", "model_a",
                                                      "model_b", "known")}
        if len(lengths) > 1:
            raise ValueError("every column of an AnswerTable must have one length")
        if len(self.choice) and (self.choice.min() < 0 or self.choice.max() >= len(CHOICES)):
            raise ValueError(f"answer choice codes must be 0..{len(CHOICES) - 1} (for {CHOICES})")
        if len(self.known) and (self.known.min() < -1 or self.known.max() >= len(CHOICES)):
            raise ValueError(f"known answer codes must be -1 (a real pair) or 0..{len(CHOICES) - 1}")

    @classmethod
    def from_columns(cls, *, rater: Sequence[int], vote: Sequence[int], pair: Sequence[int],
                     criterion: Sequence[str], choice: Sequence[str], model_a: Sequence[int],
                     model_b: Sequence[int], known: Sequence[str | None]) -> AnswerTable:
        """From columns in words: criteria by key, choices and known answers as 'a', 'b', 'tie' (None: real)."""
        names: dict[str, int] = {}
        return cls(rater=_ints(rater), vote=_ints(vote), pair=_ints(pair),
                   criterion=_ints([names.setdefault(k, len(names)) for k in criterion]),
                   choice=_choice_codes(choice, allow_none=False), model_a=_ints(model_a), model_b=_ints(model_b),
                   known=_choice_codes(known, allow_none=True))

    @classmethod
    def from_answers(cls, answers: Iterable[Answer]) -> AnswerTable:
        rows = list(answers)
        return cls.from_columns(rater=[a.rater for a in rows], vote=[a.vote for a in rows],
                                pair=[a.pair for a in rows], criterion=[a.criterion for a in rows],
                                choice=[a.choice for a in rows], model_a=[a.model_a for a in rows],
                                model_b=[a.model_b for a in rows], known=[a.known for a in rows])

    def __len__(self) -> int:
        return len(self.rater)


def _ints(values: Sequence[int] | np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.int64).reshape(-1)


def _choice_codes(values: Sequence[str | None], *, allow_none: bool) -> np.ndarray:
    """'a', 'b', 'tie' -> 0, 1, 2 (and None -> -1 where ``allow_none``); ValueError for anything else."""
    index: dict[str | None, int] = {c: i for i, c in enumerate(CHOICES)}
    if allow_none:
        index[None] = -1
    try:
        return np.fromiter((index[v] for v in values), dtype=np.int64, count=len(values))
    except KeyError as exc:
        raise ValueError(f"answer choice must be one of {CHOICES}, got {exc.args[0]!r}") from None


def _groups(*keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row -> group index for the distinct combinations of the integer ``keys``, and the first row of each group.

    The keys are combined into one integer per row (each factorised first, so the product stays small): a
    one-dimensional sort, where ``np.unique(axis=0)`` sorted rows as records at several times the cost."""
    combined = np.zeros(len(keys[0]), dtype=np.int64)
    for key in keys:
        _, codes = np.unique(key, return_inverse=True)
        combined = combined * (int(codes.max(initial=0)) + 1) + codes.reshape(-1)
    _, first, inverse = np.unique(combined, return_index=True, return_inverse=True)
    return inverse.reshape(-1), first


def rater_reliability(answers: Iterable[Answer] | AnswerTable, *, raters: Sequence[int] | None = None,
                      consensus_from: set[int] | None = None, prior_weight: float = 2.0,
                      check_accuracy: float = 0.9) -> dict[int, Reliability]:
    """Every rater's (or those in ``raters``) agreement with the leave-one-out consensus.

    ``consensus_from``: the raters whose answers form the consensus (e.g. leaving out those flagged for other
    reasons); default all. A rater is always left out of their own consensus. Computed over columns (see
    ``AnswerTable``); tests/support/reliability_reference.py holds the definition written answer by answer,
    and tests/app/trust/test_reliability.py checks that both give the same estimates.
    """
    if not 0 < check_accuracy < 1:
        raise ValueError("check_accuracy must be between 0 and 1")
    t = answers if isinstance(answers, AnswerTable) else AnswerTable.from_answers(answers)
    if not len(t):
        return {}
    choice, known, rows = t.choice, t.known, np.arange(len(t))
    criterion, criterion_first = _groups(t.criterion)
    real = known < 0
    counted = (np.ones(len(t), dtype=bool) if consensus_from is None
               else np.isin(t.rater, np.fromiter(consensus_from, dtype=np.int64, count=len(consensus_from))))
    in_consensus = real & counted

    # The consensus of every item (pair, criterion), and the study's distribution per criterion as its prior.
    item, item_first = _groups(t.pair, criterion)
    counts = np.zeros((len(item_first), len(CHOICES)))
    np.add.at(counts, (item[in_consensus], choice[in_consensus]), 1.0)
    by_criterion = np.zeros((len(criterion_first), len(CHOICES)))
    np.add.at(by_criterion, (criterion[in_consensus], choice[in_consensus]), 1.0)
    totals = by_criterion.sum(axis=1, keepdims=True)
    prior = np.divide(by_criterion, totals, out=np.full_like(by_criterion, 1 / len(CHOICES)), where=totals > 0)

    # The probability each answer's consensus gives each choice: leave-one-out on real pairs, the known answer
    # with probability check_accuracy on checks.
    others = counts[item]
    others[in_consensus, choice[in_consensus]] -= 1.0  # leave this rater's own answer out
    p = (others + prior_weight * prior[criterion]) / (others.sum(axis=1, keepdims=True) + prior_weight)
    checks = ~real
    if checks.any():
        p[checks] = (1 - check_accuracy) / (len(CHOICES) - 1)
        p[checks, known[checks]] = check_accuracy
    score = p[rows, choice]
    mean = (p * p).sum(axis=1)
    spread = np.sqrt(np.maximum((p ** 3).sum(axis=1) - mean * mean, 0.0))

    w = rows if raters is None else np.flatnonzero(np.isin(t.rater, np.asarray(list(raters), dtype=np.int64)))
    if not len(w):
        return {}
    # One vote is one unit: the mean over its criteria; its spread as if they were perfectly correlated (the mean
    # of their spreads), floored, because near an even split the formula's spread is near zero and a few votes
    # give z's with tails far heavier than the normal (an honest coin-flipping rater drew a flag in the swarm test).
    vote, vote_first = _groups(t.rater[w], t.vote[w])
    per_vote = np.bincount(vote)
    vote_score = np.bincount(vote, score[w]) / per_vote
    vote_mean = np.bincount(vote, mean[w]) / per_vote
    vote_var = np.maximum(np.bincount(vote, spread[w]) / per_vote, MIN_VOTE_SD) ** 2
    rater_ids, vote_rater = np.unique(t.rater[w][vote_first], return_inverse=True)
    vote_rater = vote_rater.reshape(-1)
    n_votes = np.bincount(vote_rater, minlength=len(rater_ids))
    observed = np.bincount(vote_rater, vote_score, minlength=len(rater_ids))
    expected = np.bincount(vote_rater, vote_mean, minlength=len(rater_ids))
    variance = np.bincount(vote_rater, vote_var, minlength=len(rater_ids))

    # The lean: the model this rater chose most, as a share of their decided answers on real pairs.
    rater_of_row = np.searchsorted(rater_ids, t.rater[w])
    decided_rows = real[w] & (choice[w] != CHOICES.index("tie"))
    decided = np.bincount(rater_of_row[decided_rows], minlength=len(rater_ids))
    most = np.zeros(len(rater_ids), dtype=np.int64)
    if decided_rows.any():
        winner = np.where(choice[w] == CHOICES.index("a"), t.model_a[w], t.model_b[w])[decided_rows]
        won, won_first = _groups(rater_of_row[decided_rows], winner)
        np.maximum.at(most, rater_of_row[decided_rows][won_first], np.bincount(won))

    return {
        int(r): Reliability(rater=int(r), votes=int(n_votes[i]), observed=float(observed[i]),
                            expected=float(expected[i]), chance=int(n_votes[i]) / len(CHOICES),
                            sd=math.sqrt(float(variance[i])), decided=int(decided[i]),
                            lean=float(most[i]) / int(decided[i]) if decided[i] else 0.0)
        for i, r in enumerate(rater_ids)
    }


def standardized(estimates: Mapping[int, Reliability], *, min_votes: int, reference: set[int] | None = None,
                 min_scale: float = MIN_SCALE) -> dict[int, float]:
    """Each rater's z relative to the study's raters: (z - median) / (1.4826 MAD), the median and MAD over the
    ``reference`` raters (default all) with ``min_votes`` votes or more.

    Why not the z itself: the consensus of a pair is estimated from a handful of answers, and a noisy
    consensus makes sum(p^2) overstate what a rater can be expected to match, most where the raters split
    evenly (a study of two equally good models put honest raters near z = -2). Every rater of the study shares
    that bias, so the study's own raters are the reference: the median and the median absolute deviation (robust
    to the careless minority the rule is looking for; the caller leaves the raters other rules caught out of
    ``reference``, so that they do not widen it). The scale is floored at ``min_scale``: a study of raters
    who all agree must not turn one slip into a flag.
    """
    zs = {r: e.z for r, e in estimates.items() if e.votes >= min_votes and e.sd > 0}
    values = sorted(z for r, z in zs.items() if reference is None or r in reference)
    if len(values) < MIN_RATERS:
        return {}
    center = _median(values)
    scale = max(1.4826 * _median(sorted(abs(v - center) for v in values)), min_scale)
    return {r: (z - center) / scale for r, z in zs.items()}


def unreliable_raters(estimates: Mapping[int, Reliability], *, alpha: float, min_votes: int,
                      max_lean: float, reference: set[int] | None = None) -> dict[int, float]:
    """Raters who agree with the others significantly less than the study's raters do: rater -> standardized z.

    One-sided at ``alpha`` (normal quantile on the standardized z); judged from ``min_votes`` votes on, among at
    least MIN_RATERS such raters; never a rater whose decided answers go to one model ``max_lean`` of the time
    or more (a consistent taste, not carelessness).
    """
    if alpha <= 0:
        return {}
    cut = NormalDist().inv_cdf(alpha)
    out = {}
    for rater, z in standardized(estimates, min_votes=min_votes, reference=reference).items():
        e = estimates[rater]
        if z < cut and not (e.decided and e.lean >= max_lean):
            out[rater] = z
    return out


def _median(sorted_values: Sequence[float]) -> float:
    n = len(sorted_values)
    mid = n // 2
    return sorted_values[mid] if n % 2 else (sorted_values[mid - 1] + sorted_values[mid]) / 2

