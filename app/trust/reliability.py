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
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

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


def _normalised(counts: Mapping[str, float]) -> dict[str, float]:
    total = sum(counts.values())
    if total <= 0:
        return dict.fromkeys(CHOICES, 1 / len(CHOICES))
    return {c: counts.get(c, 0.0) / total for c in CHOICES}


def _known_distribution(answer: str, accuracy: float) -> dict[str, float]:
    other = (1 - accuracy) / (len(CHOICES) - 1)
    return {c: (accuracy if c == answer else other) for c in CHOICES}


def rater_reliability(answers: Iterable[Answer], *, raters: Sequence[int] | None = None,
                      consensus_from: set[int] | None = None, prior_weight: float = 2.0,
                      check_accuracy: float = 0.9) -> dict[int, Reliability]:
    """Every rater's (or those in ``raters``) agreement with the leave-one-out consensus.

    ``consensus_from``: the raters whose answers form the consensus (e.g. leaving out those flagged for other
    reasons); default all. A rater is always left out of their own consensus.
    """
    answers = list(answers)
    if not 0 < check_accuracy < 1:
        raise ValueError("check_accuracy must be between 0 and 1")
    counts: dict[tuple[int, str], Counter[str]] = defaultdict(Counter)
    by_criterion: dict[str, Counter[str]] = defaultdict(Counter)
    for a in answers:
        if a.choice not in CHOICES:
            raise ValueError(f"answer choice must be one of {CHOICES}, got {a.choice!r}")
        if a.known is None and (consensus_from is None or a.rater in consensus_from):
            counts[(a.pair, a.criterion)][a.choice] += 1
            by_criterion[a.criterion][a.choice] += 1
    prior = {k: _normalised(v) for k, v in by_criterion.items()}

    wanted = set(raters) if raters is not None else {a.rater for a in answers}
    votes: dict[int, dict[int, list[Answer]]] = defaultdict(lambda: defaultdict(list))
    for a in answers:
        if a.rater in wanted:
            votes[a.rater][a.vote].append(a)

    out: dict[int, Reliability] = {}
    for rater, by_vote in votes.items():
        observed = expected = variance = 0.0
        n_votes = 0
        won: Counter[int] = Counter()
        decided = 0
        for items in by_vote.values():
            scores, means, sds = [], [], []
            for a in items:
                if a.known is not None:
                    p = _known_distribution(a.known, check_accuracy)
                else:
                    own_counted = consensus_from is None or rater in consensus_from
                    item = Counter(counts.get((a.pair, a.criterion), Counter()))
                    if own_counted:
                        item[a.choice] -= 1  # leave this rater's own answer out
                    n = sum(item.values())
                    base = prior.get(a.criterion, dict.fromkeys(CHOICES, 1 / len(CHOICES)))
                    p = {c: (item[c] + prior_weight * base[c]) / (n + prior_weight) for c in CHOICES}
                    if a.choice != "tie":
                        decided += 1
                        winner = a.model_a if a.choice == "a" else a.model_b
                        won[winner] += 1
                mean = sum(q * q for q in p.values())
                second = sum(q ** 3 for q in p.values())
                scores.append(p[a.choice])
                means.append(mean)
                sds.append(math.sqrt(max(second - mean * mean, 0.0)))
            if not scores:
                continue
            n_votes += 1
            observed += sum(scores) / len(scores)
            expected += sum(means) / len(means)
            # Criteria of one vote taken as perfectly correlated; floored, because where the consensus is near
            # an even split the formula's spread is near zero and a few votes give z's with tails far heavier than
            # the normal (an honest coin-flipping rater of two equal models drew a flag in the swarm test).
            variance += max(sum(sds) / len(sds), MIN_VOTE_SD) ** 2
        # The model this rater chose most, as a share of their decided answers on real pairs.
        lean = max(won.values()) / decided if decided else 0.0
        out[rater] = Reliability(rater=rater, votes=n_votes, observed=observed, expected=expected,
                                 chance=n_votes / len(CHOICES), sd=math.sqrt(variance), decided=decided,
                                 lean=lean)
    return out


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

