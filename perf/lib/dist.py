"""perf/lib/dist.py: comparing two latency samples in pure Python (no scipy on the box).

Used by perf/login's enumeration run (issue 6, SECURITY P01): are the latencies of refused
logins for unknown users and for known users with a wrong password one distribution?

- summary(): p10/p50/p90/p99 (statistics.quantiles, 'inclusive': interpolated between order
  statistics, so p99 of 40 samples is between the two largest) and the mean;
- ks_2samp(): the two-sample Kolmogorov-Smirnov statistic D = sup |F1(x) - F2(x)| over the
  empirical distribution functions, and its asymptotic p-value: Q_KS(lambda) with
  lambda = (en + 0.12 + 0.11 / en) * D, en = sqrt(n m / (n + m)) (Stephens' correction, as in
  Numerical Recipes' kstwo), Q_KS(l) = 2 sum_{j>=1} (-1)^(j-1) exp(-2 j^2 l^2). Good to a few
  per cent for n, m >= 20 or so, which is all a verdict at alpha = 0.01 needs; ks_critical():
  the D at which that p-value is alpha;
- hist_overlap(): the overlapping coefficient sum_i min(p_i, q_i) of the two histograms on
  common bins (1.0: identical histograms, 0.0: disjoint), a figure easier to read than D.

`python3 perf/lib/dist.py` runs the self-checks at the bottom (exit 1 on a failure).
"""

import math
import random
import statistics

KS_TERMS = 100           # Q_KS's series: terms fall as exp(-2 j^2 l^2); 100 is far past need
KS_SMALL_LAMBDA = 0.2    # below it the series converges slowly and Q_KS is 1 to 1e-20
KS_LAMBDA_MAX = 10.0     # Q_KS(10) ~ 1e-87: above any alpha worth asking for
KS_BISECTIONS = 60       # halvings of [0.2, 10]: far below a double's resolution of lambda
HIST_BINS = 20           # bins of hist_overlap(): ~10 samples a bin at 200 per class
HIST_TRIM = 0.01         # the bins span the pooled p1..p99; the tails fall in the edge bins,
                         # so one 100 ms outlier does not squeeze everything into one bin


def summary(xs):
    """{'n', 'p10', 'p50', 'p90', 'p99', 'mean'} of a sample of at least 2 values."""
    q = statistics.quantiles(xs, n=100, method="inclusive")
    return {"n": len(xs), "p10": q[9], "p50": q[49], "p90": q[89], "p99": q[98],
            "mean": statistics.fmean(xs)}


def ks_statistic(a, b):
    """D = sup_x |F_a(x) - F_b(x)|; ties are stepped over together (both EDFs jump at x)."""
    a, b = sorted(a), sorted(b)
    n, m = len(a), len(b)
    i = j = 0
    d = 0.0
    while i < n and j < m:
        x = min(a[i], b[j])
        while i < n and a[i] == x:
            i += 1
        while j < m and b[j] == x:
            j += 1
        d = max(d, abs(i / n - j / m))
    return d


def ks_q(lam):
    """Kolmogorov's survival function Q_KS(lambda)."""
    if lam < KS_SMALL_LAMBDA:
        return 1.0
    s = 0.0
    for j in range(1, KS_TERMS + 1):
        s += (-1) ** (j - 1) * math.exp(-2.0 * j * j * lam * lam)
    return min(1.0, max(0.0, 2.0 * s))


def ks_2samp(a, b):
    """(D, asymptotic p-value) of the two-sample KS test of a and b."""
    d = ks_statistic(a, b)
    en = math.sqrt(len(a) * len(b) / (len(a) + len(b)))
    return d, ks_q((en + 0.12 + 0.11 / en) * d)


def ks_critical(n, m, alpha):
    """The D above which ks_2samp's p-value falls below alpha (Q_KS inverted by bisection)."""
    lo, hi = KS_SMALL_LAMBDA, KS_LAMBDA_MAX
    for _ in range(KS_BISECTIONS):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ks_q(mid) > alpha else (lo, mid)
    en = math.sqrt(n * m / (n + m))
    return hi / (en + 0.12 + 0.11 / en)


def hist_overlap(a, b, bins=HIST_BINS):
    """sum_i min(share of a in bin i, share of b in bin i) over common equal-width bins."""
    pooled = sorted(a + b)
    q = statistics.quantiles(pooled, n=100, method="inclusive")
    lo, hi = q[round(HIST_TRIM * 100) - 1], q[99 - round(HIST_TRIM * 100)]
    if hi <= lo:
        return 1.0 if min(a) == max(a) == min(b) == max(b) else 0.0
    width = (hi - lo) / bins

    def shares(xs):
        h = [0] * bins
        for x in xs:
            h[min(bins - 1, max(0, int((x - lo) / width)))] += 1
        return [c / len(xs) for c in h]
    return sum(min(p, r) for p, r in zip(shares(a), shares(b)))


def self_check():
    """Known cases; returns the failures' descriptions."""
    bad = []
    if ks_statistic([1, 2, 3], [1, 2, 3]) != 0.0:
        bad.append("identical samples: D != 0")
    if ks_statistic([1, 2, 3], [4, 5, 6]) != 1.0:
        bad.append("disjoint samples: D != 1")
    if abs(ks_statistic([1, 2, 3, 4], [3, 4, 5, 6]) - 0.5) > 1e-12:
        bad.append("half-shifted samples: D != 0.5")
    if abs(ks_q(1.36) - 0.049) > 0.002 or abs(ks_q(1.63) - 0.0098) > 0.0005:
        bad.append("Q_KS off its tabulated 5 %% and 1 %% points: %r %r" % (ks_q(1.36),
                                                                          ks_q(1.63)))
    rng = random.Random(6)
    same = [rng.gauss(30.0, 1.0) for _ in range(200)], [rng.gauss(30.0, 1.0) for _ in range(200)]
    moved = [x + 0.5 for x in same[1]]
    if ks_2samp(*same)[1] < 0.01 or hist_overlap(*same) < 0.75:
        bad.append("one distribution told apart: %r %r" % (ks_2samp(*same),
                                                           hist_overlap(*same)))
    if ks_2samp(same[0], moved)[1] >= 0.01:
        bad.append("a half-sigma shift at n=200 not told apart: %r" % (ks_2samp(same[0], moved),))
    if abs(ks_critical(200, 200, 0.01) - 1.628 / (10.0 + 0.12 + 0.011)) > 1e-3:
        bad.append("critical D at n = m = 200, alpha 1 %%: %r" % ks_critical(200, 200, 0.01))
    s = summary(list(range(1, 102)))
    if (s["p10"], s["p50"], s["p90"], s["p99"], s["mean"]) != (11, 51, 91, 100, 51):
        bad.append("summary of 1..101: %r" % s)
    return bad


if __name__ == "__main__":
    failures = self_check()
    for f in failures:
        print("dist.py: FAIL %s" % f)
    print("dist.py: %s" % ("FAIL" if failures else "ok"))
    raise SystemExit(1 if failures else 0)
