//! The statistics behind the canary gates: Beta posteriors over failure proportions and the
//! probability that one proportion exceeds another by a margin. Pure numerics, no I/O.
//!
//! Why Beta-Binomial: each request either fails or not, so a track's failure rate after `n`
//! requests with `f` failures has the posterior `Beta(a + f, b + n - f)` for a prior
//! `Beta(a, b)`. Comparing two such posteriors works at any sample size, including the
//! sparse-error series where rank tests (Mann-Whitney) and normal approximations break down: with
//! few requests the posteriors are wide, so neither "worse" nor "not worse" reaches the confidence
//! and the window is inconclusive instead of wrongly passing or failing.
//!
//! The prior matters when requests are few. A uniform `Beta(1, 1)` says "a 50 % failure rate is
//! as likely as 0.5 %", which drags a quiet canary's estimate upwards and makes 0 failures in 20
//! requests look worse than a busy stable track. Both tracks therefore share one prior centred on
//! their pooled failure rate: under "no difference" it creates none. Its weight is one failure's
//! worth (`alpha = 1`, `beta = (1 - p) / p` for pooled rate `p`): lighter priors (`alpha < 1`)
//! pile a track that has seen no failure yet onto exactly 0 %, which makes any single canary
//! failure look damning; one pseudo-failure keeps "we have not seen a failure yet" from meaning
//! "failures are impossible". At 0.5 % it is worth 200 requests, which the data outweighs within
//! the first minutes of a busy step.

use statrs::function::beta::beta_reg;

/// Number of cells the stable posterior's bulk is divided into when integrating.
const GRID_CELLS: usize = 256;
/// How many standard deviations either side of the mean the dense grid spans; the mass beyond
/// is kept in one cell at each end, so nothing is dropped.
const GRID_SPAN_SD: f64 = 12.0;
/// The pooled rate the prior is centred on is kept inside these bounds: the lower one caps the
/// prior's weight at 1,000 requests, the upper one keeps it from leaning towards failure.
const PRIOR_RATE_BOUNDS: (f64, f64) = (1e-3, 0.5);

/// A Beta distribution over a failure proportion.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BetaPosterior {
    pub alpha: f64,
    pub beta: f64,
}

/// Request and failure counts of one track. Counts may be fractional (Prometheus `increase()`
/// extrapolates); [`Counts::new`] clamps them so that `0 <= failures <= requests`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Counts {
    pub requests: f64,
    pub failures: f64,
}

impl Counts {
    pub fn new(requests: f64, failures: f64) -> Self {
        let requests = requests.max(0.0);
        Self {
            requests,
            failures: failures.clamp(0.0, requests),
        }
    }

    pub fn rate(&self) -> f64 {
        if self.requests > 0.0 {
            self.failures / self.requests
        } else {
            0.0
        }
    }
}

impl BetaPosterior {
    /// The prior both tracks share: centred on their pooled failure rate, worth one failure.
    pub fn shared_prior(a: Counts, b: Counts) -> Self {
        let pooled = Counts::new(a.requests + b.requests, a.failures + b.failures);
        let centre = if pooled.requests > 0.0 {
            pooled.rate()
        } else {
            PRIOR_RATE_BOUNDS.1
        };
        Self::centred_on(centre)
    }

    /// A prior with mean `rate` (clamped to sane bounds) worth one failure.
    pub fn centred_on(rate: f64) -> Self {
        let (low, high) = PRIOR_RATE_BOUNDS;
        let centre = rate.clamp(low, high);
        Self {
            alpha: 1.0,
            beta: (1.0 - centre) / centre,
        }
    }

    /// The posterior after observing `counts`, starting from `prior`.
    pub fn update(prior: Self, counts: Counts) -> Self {
        Self {
            alpha: prior.alpha + counts.failures,
            beta: prior.beta + (counts.requests - counts.failures),
        }
    }

    pub fn mean(&self) -> f64 {
        self.alpha / (self.alpha + self.beta)
    }

    pub fn std_dev(&self) -> f64 {
        let total = self.alpha + self.beta;
        (self.alpha * self.beta / (total * total * (total + 1.0))).sqrt()
    }

    /// P(X <= x).
    pub fn cdf(&self, x: f64) -> f64 {
        if x <= 0.0 {
            0.0
        } else if x >= 1.0 {
            1.0
        } else {
            beta_reg(self.alpha, self.beta, x)
        }
    }

    /// P(X > x).
    pub fn survival(&self, x: f64) -> f64 {
        1.0 - self.cdf(x)
    }
}

/// How much worse than stable the canary may be before it counts as worse: the canary's rate
/// must stay at or below `stable * (1 + relative) + absolute`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Margin {
    pub relative: f64,
    pub absolute: f64,
}

impl Margin {
    pub const NONE: Margin = Margin {
        relative: 0.0,
        absolute: 0.0,
    };

    /// The highest canary rate still acceptable when stable's rate is `stable`.
    pub fn limit(&self, stable: f64) -> f64 {
        stable * (1.0 + self.relative) + self.absolute
    }
}

/// P(canary > margin.limit(stable)): the probability that the canary's failure rate exceeds what
/// the margin allows over the stable one.
///
/// Computed as the expectation over the stable posterior of the canary's survival function at
/// the limit, by splitting [0, 1] into cells whose probability under the stable posterior is
/// exact (differences of its CDF) and evaluating the canary's survival at each cell's midpoint.
pub fn prob_exceeds(canary: BetaPosterior, stable: BetaPosterior, margin: Margin) -> f64 {
    let mean = stable.mean();
    let spread = GRID_SPAN_SD * stable.std_dev();
    let low = (mean - spread).max(0.0);
    let high = (mean + spread).min(1.0);

    let mut edges = Vec::with_capacity(GRID_CELLS + 3);
    if low > 0.0 {
        edges.push(0.0);
    }
    let width = (high - low) / GRID_CELLS as f64;
    edges.extend((0..=GRID_CELLS).map(|i| low + width * i as f64));
    if high < 1.0 {
        edges.push(1.0);
    }

    let mut total = 0.0;
    let mut previous_cdf = stable.cdf(edges[0]);
    for pair in edges.windows(2) {
        let cdf = stable.cdf(pair[1]);
        let weight = cdf - previous_cdf;
        previous_cdf = cdf;
        if weight <= 0.0 {
            continue;
        }
        let midpoint = 0.5 * (pair[0] + pair[1]);
        total += weight * canary.survival(margin.limit(midpoint));
    }
    total.clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    fn absolute(margin: f64) -> Margin {
        Margin {
            relative: 0.0,
            absolute: margin,
        }
    }

    fn posteriors(canary: (f64, f64), stable: (f64, f64)) -> (BetaPosterior, BetaPosterior) {
        let canary = Counts::new(canary.0, canary.1);
        let stable = Counts::new(stable.0, stable.1);
        let prior = BetaPosterior::shared_prior(canary, stable);
        (
            BetaPosterior::update(prior, canary),
            BetaPosterior::update(prior, stable),
        )
    }

    const UNIFORM: BetaPosterior = BetaPosterior {
        alpha: 1.0,
        beta: 1.0,
    };

    #[test]
    fn identical_posteriors_are_a_coin_flip_at_zero_margin() {
        let (p, q) = posteriors((1000.0, 10.0), (1000.0, 10.0));
        assert!(close(prob_exceeds(p, q, Margin::NONE), 0.5, 0.01));
    }

    #[test]
    fn closed_form_for_uniform_posteriors() {
        // X, Y ~ U(0,1): P(X - Y > m) = (1 - m)^2 / 2.
        for margin in [0.0, 0.1, 0.25, 0.5] {
            let expected = (1.0 - margin) * (1.0 - margin) / 2.0;
            let got = prob_exceeds(UNIFORM, UNIFORM, absolute(margin));
            assert!(
                close(got, expected, 0.005),
                "margin {margin}: {got} vs {expected}"
            );
        }
    }

    #[test]
    fn clearly_worse_canary_is_near_certain() {
        let (canary, stable) = posteriors((2000.0, 100.0), (18000.0, 90.0)); // 5 % vs 0.5 %
        assert!(prob_exceeds(canary, stable, absolute(0.002)) > 0.999);
        assert!(prob_exceeds(stable, canary, Margin::NONE) < 0.001);
    }

    #[test]
    fn few_requests_leave_the_question_open() {
        // One failure in 20 canary requests against none in 180: suspicious, not proven.
        let (canary, stable) = posteriors((20.0, 1.0), (180.0, 0.0));
        let worse = prob_exceeds(canary, stable, absolute(0.002));
        assert!(worse > 0.05 && worse < 0.95, "got {worse}");
    }

    #[test]
    fn a_quiet_canary_without_failures_does_not_look_worse() {
        // The uniform prior's failure mode: 0 of 20 would have a posterior mean of 4.5 %.
        let (canary, stable) = posteriors((20.0, 0.0), (180.0, 1.0));
        assert!(
            canary.mean() < stable.mean() + 0.005,
            "{canary:?} vs {stable:?}"
        );
        assert!(prob_exceeds(canary, stable, absolute(0.002)) < 0.5);
    }

    #[test]
    fn relative_margin_scales_with_the_stable_rate() {
        let margin = Margin {
            relative: 0.5,
            absolute: 0.001,
        };
        assert!(close(margin.limit(0.004), 0.007, 1e-12));
        let (canary, stable) = posteriors((20000.0, 120.0), (180000.0, 720.0)); // 0.6 % vs 0.4 %
        assert!(prob_exceeds(canary, stable, margin) < 0.05);
        let (canary, stable) = posteriors((20000.0, 200.0), (180000.0, 720.0)); // 1.0 % vs 0.4 %
        assert!(prob_exceeds(canary, stable, margin) > 0.95);
    }

    #[test]
    fn counts_are_clamped() {
        let c = Counts::new(10.4, 12.0);
        assert_eq!((c.requests, c.failures), (10.4, 10.4));
        let c = Counts::new(-3.0, -1.0);
        assert_eq!((c.requests, c.failures), (0.0, 0.0));
        assert_eq!(c.rate(), 0.0);
    }
}
