"""Which file to ship: the one selection `edgecls tune` and `edgecls report` share. Which candidates
meet the budgets, which one wins, why, what the closest one misses by when none does, which
differences the measurements can resolve (latency intervals over repeated processes, a paired test
of accuracy on the same images), and the front that noise cannot reorder. Pure functions on
candidate records (dicts):

    id            "stage/variant@Nt", unique
    artifact      "stage/variant": one file; its thread counts are separate candidates
    status        "ok" once validated and measured; anything else is never chosen
    accuracy      top-1 on the validation split (0..1)
    drop          points lost against the float model on the same images (positive = worse)
    bytes, gzip_bytes
    latency_ms    p50 at batch 1 (None until measured)
    latency_rounds_ms   optional: the p50 of each process that measured it (an interval when > 1)
    correct       optional: per-image correctness (bool array) on the images `accuracy` counts
    precision     optional: "fp32", "fp16", "int8", ...
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .config import OBJECTIVES, SIZE_MEASURES  # noqa: E402,F401 (defined with the configs)


@dataclass(frozen=True)
class Budgets:
    max_drop: float | None = None  # points of top-1 against the float model
    max_bytes: int | None = None
    size_measure: str = "file"  # what max_bytes and the size objective count: "file" or "gzip"
    max_latency_ms: float | None = None  # p50 at batch 1
    max_ram_bytes: int | None = None  # tensor arena + input and output buffers under TFLite Micro
    max_flash_bytes: int | None = None  # the model array
    board: str | None = None

    @property
    def micro(self) -> bool:
        """Budgets of a microcontroller: only files TFLite Micro runs are candidates."""
        return self.max_ram_bytes is not None or self.max_flash_bytes is not None

    def size_key(self) -> str:
        return "gzip_bytes" if self.size_measure == "gzip" else "bytes"

    def describe(self) -> str:
        parts = []
        if self.max_drop is not None:
            parts.append(f"--max-drop {self.max_drop:g}")
        if self.max_bytes is not None:
            parts.append(f"--max-bytes {self.max_bytes} ({self.size_measure})")
        if self.max_latency_ms is not None:
            parts.append(f"--max-latency-ms {self.max_latency_ms:g}")
        if self.max_ram_bytes is not None:
            parts.append(f"--max-ram-kb {self.max_ram_bytes / 1024:g}")
        if self.max_flash_bytes is not None:
            parts.append(f"--max-flash-kb {self.max_flash_bytes / 1024:g}")
        text = " and ".join(parts) or "no budget"
        return f"{text} ({self.board})" if self.board else text


def misses(c: dict, budgets: Budgets) -> dict[str, float]:
    """Each budget `c` exceeds, with by how much in the budget's own unit (points, bytes, ms)."""
    out = {}
    if budgets.max_drop is not None and c["drop"] > budgets.max_drop + 1e-9:
        out["max_drop"] = round(c["drop"] - budgets.max_drop, 4)
    if budgets.max_bytes is not None and c[budgets.size_key()] > budgets.max_bytes:
        out["max_bytes"] = c[budgets.size_key()] - budgets.max_bytes
    if budgets.max_latency_ms is not None and c.get("latency_ms") is not None and c["latency_ms"] > budgets.max_latency_ms:
        out["max_latency_ms"] = round(c["latency_ms"] - budgets.max_latency_ms, 4)
    for key, field_ in (("max_ram_bytes", "ram_bytes"), ("max_flash_bytes", "flash_bytes")):
        limit = getattr(budgets, key)
        if limit is not None and c.get(field_) is not None and c[field_] > limit:
            out[key] = int(c[field_] - limit)
    return out


MISS_FLAGS = {"max_drop": "--max-drop", "max_bytes": "--max-bytes", "max_latency_ms": "--max-latency-ms",
              "max_ram_bytes": "--max-ram-kb", "max_flash_bytes": "--max-flash-kb"}


def measured(c: dict) -> bool:
    return c.get("status") == "ok" and c.get("latency_ms") is not None and c.get("accuracy") is not None


def eligible(c: dict, budgets: Budgets) -> bool:
    """Measured, and, under microcontroller budgets, a file TFLite Micro runs and validates."""
    return measured(c) and (not budgets.micro or (c.get("micro_status") == "ok" and c.get("ram_bytes") is not None))


def feasible(candidates, budgets: Budgets) -> list[dict]:
    return [c for c in candidates if eligible(c, budgets) and not misses(c, budgets)]


def rank_key(c: dict, objective: str, budgets: Budgets):
    """Sort key, best first: the objective, then accuracy, then the other figures, then the id (so
    the order, and the choice, never depend on the order candidates were measured in)."""
    size = c[budgets.size_key()]
    if objective == "latency":
        return (c["latency_ms"], -c["accuracy"], size, c["id"])
    if objective == "size":
        return (size, -c["accuracy"], c["latency_ms"], c["id"])
    if objective == "accuracy":
        return (-c["accuracy"], c["latency_ms"], size, c["id"])
    raise ValueError(objective)


def ranked(candidates, objective: str, budgets: Budgets) -> list[dict]:
    return sorted((c for c in candidates if eligible(c, budgets)), key=lambda c: rank_key(c, objective, budgets))


def _excess(c: dict, budgets: Budgets) -> tuple[int, float]:
    """How far `c` is from meeting every budget: budgets missed, then the sum of the relative misses
    (points over the drop budget count against max(budget, 1 point))."""
    miss = misses(c, budgets)
    total = 0.0
    for key, over in miss.items():
        limit = {"max_drop": max(budgets.max_drop or 0.0, 1.0), "max_bytes": budgets.max_bytes,
                 "max_latency_ms": budgets.max_latency_ms, "max_ram_bytes": budgets.max_ram_bytes,
                 "max_flash_bytes": budgets.max_flash_bytes}[key]
        total += over / limit
    return len(miss), total


def closest(candidates, budgets: Budgets) -> dict | None:
    pool = [c for c in candidates if eligible(c, budgets)]
    return min(pool, key=lambda c: (*_excess(c, budgets), c["id"])) if pool else None


def miss_text(c: dict, budgets: Budgets) -> str:
    parts = []
    for key, over in misses(c, budgets).items():
        if key == "max_drop":
            parts.append(f"loses {c['drop']:.2f} points, {over:.2f} over --max-drop {budgets.max_drop:g}")
        elif key == "max_bytes":
            parts.append(f"{c[budgets.size_key()]:,} {budgets.size_measure} bytes, {over:,} over --max-bytes "
                         f"{budgets.max_bytes:,}")
        elif key == "max_latency_ms":
            parts.append(f"p50 {c['latency_ms']:.3f} ms, {over:.3f} ms over --max-latency-ms {budgets.max_latency_ms:g}")
        else:
            what, figure = ("RAM", "ram_bytes") if key == "max_ram_bytes" else ("flash", "flash_bytes")
            parts.append(f"{what} {c[figure] / 1024:.1f} KB, {over / 1024:.1f} KB over {MISS_FLAGS[key]} "
                         f"{getattr(budgets, key) / 1024:g}")
    return "; ".join(parts)


@dataclass
class Choice:
    winner: dict | None
    runner_up: dict | None  # the best feasible candidate of another file (a paired test needs two files)
    feasible: int
    compared: int
    bound_by: dict = field(default_factory=dict)  # budget -> candidates better on the objective it excluded
    better_excluded: list = field(default_factory=list)  # those candidates' ids, best first
    closest: dict | None = None  # when nothing is feasible
    message: str = ""
    tied_with: list = field(default_factory=list)  # feasible ids the objective's measurement cannot tell from the winner
    measured_best: str | None = None  # the best on the objective as measured, before ties were weighed


def choose(candidates, budgets: Budgets, objective: str) -> Choice:
    """The best feasible candidate on `objective`; with the budgets that excluded better ones, or,
    when none is feasible, the closest candidate and what it misses."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    order = ranked(candidates, objective, budgets)
    ok = [c for c in order if not misses(c, budgets)]
    if not ok:
        near = closest(order, budgets)
        message = (f"no candidate meets {budgets.describe()} ({len(order)} compared)" +
                   (f"; the closest is {near['id']}: {miss_text(near, budgets)}" if near else ""))
        if budgets.micro and not order:
            message = (f"no candidate runs under TFLite Micro within {budgets.describe()}: the search holds no full-integer "
                       f"TFLite file that TFLite Micro runs and validates ({len([c for c in candidates if measured(c)])} "
                       f"other files measured)")
        for key, name in MISS_FLAGS.items():
            # With several budgets: the candidate within all the others that comes nearest to this one.
            others = [c for c in order if set(misses(c, budgets)) == {key}]
            if others and set(misses(near, budgets)) != {key}:
                best = min(others, key=lambda c: (misses(c, budgets)[key], c["id"]))
                message += f"; within the other budgets, the nearest to {name} is {best['id']}: {miss_text(best, budgets)}"
        return Choice(None, None, 0, len(order), closest=near, message=message)
    # The measured best is not reliably better than a candidate its measurement cannot tell apart
    # from it: among those, one more accurate beyond noise is taken (the most accurate such); else
    # the measured best stays, and the tie is said.
    best = ok[0]
    tied = [c for c in ok if c is best or not better_beyond_noise(best, c, objective, budgets)]
    if objective == "accuracy":
        surer = [c for c in tied if faster_beyond_noise(c, best)]
    else:
        surer = [c for c in tied if more_accurate_beyond_noise(c, best)]
    winner = min(surer, key=lambda c: tie_break(c, objective, budgets)) if surer else best
    tied = [c["id"] for c in ok if c["artifact"] != winner["artifact"] and not better_beyond_noise(winner, c, objective, budgets)
            and not better_beyond_noise(c, winner, objective, budgets)]
    runner = next((c for c in ok if c is not winner and c["artifact"] != winner["artifact"]), None)
    better = order[:order.index(ok[0])]
    bound: dict[str, int] = {}
    for c in better:
        for key in misses(c, budgets):
            bound[key] = bound.get(key, 0) + 1
    return Choice(winner, runner, len(ok), len(order), bound, [c["id"] for c in better], tied_with=tied,
                  measured_best=best["id"])


def fine_tune_reason(candidates, budgets: Budgets, objective: str) -> str | None:
    """Why fine-tuned candidates (pruning, QAT) are worth their cost after the post-training ones
    were measured, or None when they cannot beat the best of those.

    - nothing meets the budgets: QAT may recover an int8 file's accuracy, pruning may shrink gzip size;
    - the size objective counted in gzip bytes: pruning shrinks only compressed size;
    - a candidate better on the objective missed only the accuracy budget: QAT, or pruning with
      QAT, may bring that file's kind within it.
    Pruning does not speed up dense kernels and a QAT int8 file runs like a post-training one, so a
    latency or accuracy objective met within budget needs nothing else."""
    choice = choose(candidates, budgets, objective)
    if choice.winner is None:
        memory = {"max_ram_bytes", "max_flash_bytes"}
        pool = [c for c in candidates if eligible(c, budgets)]
        if budgets.micro and pool and all(set(misses(c, budgets)) & memory for c in pool):
            # TFLite Micro's arena follows the architecture and its flash the dense file: neither
            # pruning nor QAT changes them, so fine-tuning cannot bring a file within these budgets.
            return None
        return f"no candidate so far meets {budgets.describe()}: pruned or quantization-aware trained ones may"
    if objective == "size" and budgets.size_measure == "gzip":
        return "the objective is gzip size, which only pruning can shrink further"
    by_id = {c["id"]: c for c in candidates}
    for c in (by_id[i] for i in choice.better_excluded):
        if set(misses(c, budgets)) == {"max_drop"} and c.get("precision") == "int8":
            return (f"{c['id']} beats the choice on {objective} but {miss_text(c, budgets)}: quantization-aware "
                    f"training may recover it")
    return None


# -- What the measurements can resolve ------------------------------------------------------

# Two classifiers' accuracies on the same images differ beyond noise when the exact McNemar test on
# the images only one of them gets right rejects equality at this level.
SIGNIFICANCE = 0.05
# Two files' speeds differ beyond noise when the exact rank test over their processes' p50s rejects
# equality at this level: with 5 processes each, only when every process of one is faster than every
# process of the other (p = 2/252); stricter than accuracy's, because a recommendation that changes
# from one bench to the next on the same machine is worse than one that says "as fast as".
LATENCY_SIGNIFICANCE = 0.01


def latency_interval(c: dict) -> tuple[float, float] | None:
    """The range of a candidate's batch-1 p50 over the processes that measured it; None when one
    process did (no interval is known)."""
    rounds = c.get("latency_rounds_ms") or []
    return (min(rounds), max(rounds)) if len(rounds) > 1 else None


def mann_whitney_p(a, b) -> float:
    """Two-sided exact p-value of the Mann-Whitney rank test that samples `a` and `b` (a few
    processes' p50s each) come from one distribution; ties count a half."""
    m, n = len(a), len(b)
    u = sum((x > y) + 0.5 * (x == y) for x in a for y in b)
    u = min(u, m * n - u)
    # ways(i, j, k): orderings of i + j distinct values in which U = k (the classic recurrence).
    from functools import lru_cache

    @lru_cache(maxsize=None)
    def ways(i: int, j: int, k: int) -> int:
        if k < 0:
            return 0
        if i == 0 or j == 0:
            return 1 if k == 0 else 0
        return ways(i - 1, j, k - j) + ways(i, j - 1, k)

    from math import comb

    below = sum(ways(m, n, k) for k in range(int(u) + 1))
    return min(1.0, 2 * below / comb(m + n, m))


def faster_beyond_noise(a: dict, b: dict) -> bool:
    """`a`'s batch-1 p50s over repeated processes are below `b`'s beyond chance: the exact rank test
    (Mann-Whitney) rejects equal speed at LATENCY_SIGNIFICANCE, or, with too few processes for the test to
    ever reach that, every process of `a` is faster than every process of `b` (with 3 each, two
    equally fast files do that by chance 1 time in 10). Measured in one process each, the p50s
    decide as they are (no interval is known)."""
    ra, rb = a.get("latency_rounds_ms") or [], b.get("latency_rounds_ms") or []
    if len(ra) < 2 or len(rb) < 2:
        return a["latency_ms"] < b["latency_ms"]
    if sorted(ra)[len(ra) // 2] >= sorted(rb)[len(rb) // 2]:
        return False
    from math import comb

    if 2 / comb(len(ra) + len(rb), len(ra)) > LATENCY_SIGNIFICANCE:  # the test cannot reject: complete separation
        return max(ra) < min(rb)
    return mann_whitney_p(ra, rb) < LATENCY_SIGNIFICANCE


def accuracy_test(a: dict, b: dict) -> dict | None:
    """The paired comparison of two candidates' per-image correctness (edgecls.evaluation.paired),
    or None when either lacks it or they were scored on different images."""
    ca, cb = a.get("correct"), b.get("correct")
    if ca is None or cb is None or len(ca) != len(cb) or a.get("images_id") != b.get("images_id"):
        return None
    from .evaluation import paired

    return paired(ca, cb)


def more_accurate_beyond_noise(a: dict, b: dict) -> bool:
    """`a` gets more images right than `b` and the paired test says it is no accident. Without
    per-image results, the unpaired two-proportion z-test on the images each was scored on (it
    resolves less than the paired one: it never calls a difference real that the paired test
    would not); without image counts the accuracies decide as they are."""
    test = accuracy_test(a, b)
    if test is not None:
        return test["only_a_right"] > test["only_b_right"] and test["mcnemar_p"] < SIGNIFICANCE
    if a["accuracy"] <= b["accuracy"]:
        return False
    na, nb = a.get("images"), b.get("images")
    if not (isinstance(na, int) and isinstance(nb, int) and na > 0 and nb > 0):
        return True
    from math import erf, sqrt

    pooled = (a["accuracy"] * na + b["accuracy"] * nb) / (na + nb)
    se = sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / na + 1 / nb))
    z = (a["accuracy"] - b["accuracy"]) / se
    return 1 - erf(z / sqrt(2)) < SIGNIFICANCE  # two-sided p = 2 * (1 - Phi(z))


def better_beyond_noise(a: dict, b: dict, objective: str, budgets: Budgets | None = None) -> bool:
    """`a` beats `b` on the objective by more than its measurement's noise: latency by its interval,
    size exactly (a file's size has no noise), accuracy by the paired test."""
    if objective == "latency":
        return faster_beyond_noise(a, b)
    if objective == "size":
        key = (budgets or Budgets()).size_key()
        return a[key] < b[key]
    return more_accurate_beyond_noise(a, b)


def tie_break(c: dict, objective: str, budgets: Budgets):
    """Among candidates the objective cannot tell apart that beat the measured best beyond noise on
    the other count: the more accurate, then the smaller, then the faster median, then the id."""
    size = c[budgets.size_key()]
    if objective == "accuracy":
        return (c["latency_ms"], size, -c["accuracy"], c["id"])
    return (-c["accuracy"], size, c["latency_ms"], c["id"])


def dominates(a: dict, b: dict, cost: str = "latency", budgets: Budgets | None = None) -> bool:
    """`a` dominates `b` when it is neither costlier (latency or size) nor less accurate beyond noise,
    and is cheaper or more accurate beyond noise: a difference the measurement cannot resolve never
    puts a candidate off the front."""
    return (not better_beyond_noise(b, a, cost, budgets) and not more_accurate_beyond_noise(b, a)
            and (better_beyond_noise(a, b, cost, budgets) or more_accurate_beyond_noise(a, b)))


def cost_of(c: dict, cost: str, budgets: Budgets | None = None) -> float:
    """A candidate's cost as measured: its size (file or gzip bytes) or its batch-1 p50."""
    return c[(budgets or Budgets()).size_key()] if cost == "size" else c["latency_ms"]


def signed_points(drop: float) -> str:
    """Points against the float model, signed (a loss is negative), never "-0.00"."""
    return f"{0.0 - drop + 0.0:+.2f}"


def robust_front(candidates, cost: str = "latency", budgets: Budgets | None = None) -> list[dict]:
    """The measured candidates no other dominates (`dominates`), cheapest first."""
    pool = [c for c in candidates if measured(c)]
    front = [c for c in pool if not any(dominates(o, c, cost, budgets) for o in pool if o is not c)]
    return sorted(front, key=lambda c: (cost_of(c, cost, budgets), -c["accuracy"], c["id"]))


def tied_pairs(candidates, cost: str = "latency", budgets: Budgets | None = None) -> list[tuple[str, str]]:
    """Pairs of candidates whose cost the measurement cannot order (latency intervals that overlap;
    equal sizes) and whose accuracies the paired test cannot either: ties."""
    pool = list(candidates)
    out = []
    for i, a in enumerate(pool):
        for b in pool[i + 1:]:
            if not (better_beyond_noise(a, b, cost, budgets) or better_beyond_noise(b, a, cost, budgets)
                    or more_accurate_beyond_noise(a, b) or more_accurate_beyond_noise(b, a)):
                out.append((a["id"], b["id"]))
    return out


def tie_groups(candidates, cost: str = "latency", budgets: Budgets | None = None) -> list[list[str]]:
    """`tied_pairs` joined into groups (each candidate tied, directly or through others, with the
    rest of its group), in the candidates' order."""
    pool = [c["id"] for c in candidates]
    group = {i: {i} for i in pool}
    for a, b in tied_pairs(candidates, cost, budgets):
        if group[a] is not group[b]:
            merged = group[a] | group[b]
            for x in merged:
                group[x] = merged
    out, seen = [], set()
    for i in pool:
        if len(group[i]) > 1 and i not in seen:
            seen |= group[i]
            out.append([x for x in pool if x in group[i]])
    return out


def front(candidates, budgets: Budgets, objective: str) -> list[str]:
    """Artifacts on the front of accuracy against the objective's cost (latency, or size for the size
    objective), each at its best thread count, by `robust_front`."""
    cost = "size" if objective == "size" else "latency"
    best = {}
    for c in candidates:
        if measured(c) and (c["artifact"] not in best or cost_of(c, cost, budgets) < cost_of(best[c["artifact"]], cost, budgets)):
            best[c["artifact"]] = c
    return [c["artifact"] for c in robust_front(best.values(), cost, budgets)]


def speed_tie(a: dict, b: dict) -> bool:
    """Whether two candidates, each measured in several processes, are as fast as each other:
    neither is faster beyond noise (`faster_beyond_noise`), so the faster median is not a reliable
    ranking on this machine."""
    return (latency_interval(a) is not None and latency_interval(b) is not None
            and not faster_beyond_noise(a, b) and not faster_beyond_noise(b, a))


def explain(choice: Choice, budgets: Budgets, objective: str) -> list[str]:
    """The answer in words: the pick and its figures, then the reason."""
    if choice.winner is None:
        return [choice.message]
    w = choice.winner
    first = (f"{w['id']}: top-1 {100 * w['accuracy']:.2f}% on validation ({-w['drop']:+.2f} points against the float model), "
             f"{w['bytes']:,} bytes ({w['gzip_bytes']:,} gzip), p50 {w['latency_ms']:.3f} ms")
    if budgets.micro:
        first += (f"; under TFLite Micro: RAM {w['ram_bytes'] / 1024:.1f} KB (arena {w['arena_bytes']:,} bytes), "
                  f"flash {w['flash_bytes'] / 1024:.1f} KB" + (f", fits {budgets.board}" if budgets.board else ""))
    why = [f"{'fastest' if objective == 'latency' else 'smallest' if objective == 'size' else 'most accurate'} "
           f"of {choice.feasible} candidates within {budgets.describe()} ({choice.compared} compared)"]
    if choice.bound_by:
        why.append("bound by " + ", ".join(f"{MISS_FLAGS[k]} ({n} better candidate{'s' if n > 1 else ''} excluded)"
                                           for k, n in sorted(choice.bound_by.items())))
    if choice.tied_with:
        what = {"latency": "as fast as", "size": "as small as", "accuracy": "as accurate as"}[objective]
        why.append(f"{what} {', '.join(choice.tied_with)} within what the measurement resolves" +
                   ("" if choice.winner["id"] == choice.measured_best else
                    f": the more accurate beyond noise taken over {choice.measured_best}"))
    r = choice.runner_up
    if r is not None:
        why.append(f"next: {r['id']} ({100 * r['accuracy']:.2f}%, {r[budgets.size_key()]:,} {budgets.size_measure} bytes, "
                   f"p50 {r['latency_ms']:.3f} ms)")
    return [first, "; ".join(why)]
