//! From a metric proposal to the replicas an autoscaler sets, as upstream's normalisation:
//! recommendations are stabilised over a window (scale-down waits out the highest recent
//! recommendation; five minutes unless `behavior` says otherwise), the change is limited by the
//! scaling policies over their periods (without `behavior`: at most double, or 4), and the result
//! is kept within minReplicas..maxReplicas. Each step names its reason for the conditions.

use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscalerBehavior};

/// One scaling policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub percent: bool,
    pub value: i32,
    pub period: Duration,
}

/// How one direction may move.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    pub window: Duration,
    /// `Max`, `Min` or `Disabled`.
    pub select: String,
    pub policies: Vec<Policy>,
}

fn rules(r: Option<&HPAScalingRules>, up: bool, default_window: Duration) -> Rules {
    let default_policies = if up {
        vec![
            Policy {
                percent: true,
                value: 100,
                period: Duration::from_secs(15),
            },
            Policy {
                percent: false,
                value: 4,
                period: Duration::from_secs(15),
            },
        ]
    } else {
        vec![Policy {
            percent: true,
            value: 100,
            period: Duration::from_secs(15),
        }]
    };
    let window = r
        .and_then(|r| r.stabilization_window_seconds)
        .map(|s| Duration::from_secs(s.max(0) as u64))
        .unwrap_or(if up { Duration::ZERO } else { default_window });
    let policies = match r.and_then(|r| r.policies.as_ref()) {
        Some(ps) if !ps.is_empty() => ps
            .iter()
            .map(|p| Policy {
                percent: p.type_ == "Percent",
                value: p.value,
                period: Duration::from_secs(p.period_seconds.max(0) as u64),
            })
            .collect(),
        _ => default_policies,
    };
    Rules {
        window,
        select: r
            .and_then(|r| r.select_policy.clone())
            .unwrap_or_else(|| "Max".into()),
        policies,
    }
}

/// What an autoscaler remembers between syncs.
#[derive(Default, Debug)]
pub struct History {
    recommendations: Vec<(i32, Instant)>,
    /// Replicas added (positive) or removed (negative) by each rescale.
    events: Vec<(i32, Instant)>,
}

impl History {
    /// The first sync starts from the current count.
    pub fn start(&mut self, current: i32, now: Instant) {
        if self.recommendations.is_empty() {
            self.recommendations.push((current, now));
        }
    }

    /// Records a rescale (only kept when `behavior` is set, as upstream).
    pub fn rescaled(&mut self, from: i32, to: i32, now: Instant) {
        self.events
            .retain(|(_, at)| now.duration_since(*at) < Duration::from_secs(3600));
        self.events.push((to - from, now));
    }

    fn changed_within(&self, period: Duration, up: bool, now: Instant) -> i32 {
        self.events
            .iter()
            .filter(|(_, at)| now.duration_since(*at) < period)
            .map(|(d, _)| if up { (*d).max(0) } else { (-*d).max(0) })
            .sum()
    }

    /// Keeps `desired` among the recommendations and returns the highest within `window`
    /// (upstream's rule for autoscalers without `behavior`).
    fn highest_recent(&mut self, desired: i32, window: Duration, now: Instant) -> i32 {
        let mut highest = desired;
        let mut old = None;
        for (i, (rec, at)) in self.recommendations.iter().enumerate() {
            if now.duration_since(*at) >= window {
                old = Some(i);
            } else {
                highest = highest.max(*rec);
            }
        }
        match old {
            Some(i) => self.recommendations[i] = (desired, now),
            None => self.recommendations.push((desired, now)),
        }
        highest
    }

    /// Keeps `desired` among the recommendations and returns the stabilised one: no lower than
    /// any in the scale-up window, no higher than any in the scale-down window.
    fn stabilize(
        &mut self,
        current: i32,
        desired: i32,
        up: &Rules,
        down: &Rules,
        now: Instant,
    ) -> i32 {
        let (mut up_rec, mut down_rec) = (desired, desired);
        let mut old = None;
        for (i, (rec, at)) in self.recommendations.iter().enumerate() {
            let age = now.duration_since(*at);
            if age < up.window {
                up_rec = up_rec.min(*rec);
            }
            if age < down.window {
                down_rec = down_rec.max(*rec);
            }
            if age >= up.window && age >= down.window {
                old = Some(i);
            }
        }
        match old {
            Some(i) => self.recommendations[i] = (desired, now),
            None => self.recommendations.push((desired, now)),
        }
        current.max(up_rec).min(down_rec)
    }
}

/// The outcome of normalisation: the replicas, and the reasons for the AbleToScale and
/// ScalingLimited conditions.
#[derive(Debug, PartialEq, Eq)]
pub struct Normalized {
    pub replicas: i32,
    /// (reason, message) for AbleToScale.
    pub able: (&'static str, &'static str),
    /// Whether the limits changed the recommendation, with (reason, message).
    pub limited: (bool, &'static str, &'static str),
}

const READY: (&str, &str) = ("ReadyForNewScale", "recommended size matches current size");
const UP_STABILIZED: (&str, &str) = (
    "ScaleUpStabilized",
    "recent recommendations were lower than current one, applying the lowest recent recommendation",
);
const DOWN_STABILIZED: (&str, &str) = (
    "ScaleDownStabilized",
    "recent recommendations were higher than current one, applying the highest recent recommendation",
);
const WITHIN: (&str, &str) = (
    "DesiredWithinRange",
    "the desired count is within the acceptable range",
);
const TOO_MANY: (&str, &str) = (
    "TooManyReplicas",
    "the desired replica count is more than the maximum replica count",
);
const TOO_FEW: (&str, &str) = (
    "TooFewReplicas",
    "the desired replica count is less than the minimum replica count",
);
const UP_LIMIT: (&str, &str) = (
    "ScaleUpLimit",
    "the desired replica count is increasing faster than the maximum scale rate",
);
const DOWN_LIMIT: (&str, &str) = (
    "ScaleDownLimit",
    "the desired replica count is decreasing faster than the maximum scale rate",
);

/// Normalises `desired` for an autoscaler with `behavior` (or without: upstream's older rules
/// with `downscale_window`).
#[allow(clippy::too_many_arguments)]
pub fn normalize(
    history: &mut History,
    behavior: Option<&HorizontalPodAutoscalerBehavior>,
    downscale_window: Duration,
    current: i32,
    desired: i32,
    min: i32,
    max: i32,
    now: Instant,
) -> Normalized {
    let Some(b) = behavior else {
        let stabilized = history.highest_recent(desired, downscale_window, now);
        let able = if stabilized != desired {
            DOWN_STABILIZED
        } else {
            READY
        };
        let scale_up_limit = (2 * current).max(4);
        let (max_allowed, why) = if max > scale_up_limit {
            (scale_up_limit, UP_LIMIT)
        } else {
            (max, TOO_MANY)
        };
        let (replicas, reason) = if stabilized < min {
            (min, TOO_FEW)
        } else if stabilized > max_allowed {
            (max_allowed, why)
        } else {
            (stabilized, WITHIN)
        };
        return Normalized {
            replicas,
            able,
            limited: (replicas != stabilized, reason.0, reason.1),
        };
    };
    let up = rules(b.scale_up.as_ref(), true, Duration::ZERO);
    let down = rules(b.scale_down.as_ref(), false, downscale_window);
    let stabilized = history.stabilize(current, desired, &up, &down, now);
    let able = if stabilized == desired {
        READY
    } else if desired >= current {
        UP_STABILIZED
    } else {
        DOWN_STABILIZED
    };
    let (replicas, reason) = if stabilized > current {
        let limit = up_limit(history, current, &up, now).max(current);
        let (max_allowed, why) = if max > limit {
            (limit, UP_LIMIT)
        } else {
            (max, TOO_MANY)
        };
        if stabilized > max_allowed {
            (max_allowed, why)
        } else {
            (stabilized, WITHIN)
        }
    } else if stabilized < current {
        let limit = down_limit(history, current, &down, now).min(current);
        let (min_allowed, why) = if min < limit {
            (limit, DOWN_LIMIT)
        } else {
            (min, TOO_FEW)
        };
        if stabilized < min_allowed {
            (min_allowed, why)
        } else {
            (stabilized, WITHIN)
        }
    } else {
        (stabilized, WITHIN)
    };
    // Outside min..max (e.g. min raised): clamp, as upstream's final bounds.
    let (replicas, reason) = if replicas > max {
        (max, TOO_MANY)
    } else if replicas < min {
        (min, TOO_FEW)
    } else {
        (replicas, reason)
    };
    Normalized {
        replicas,
        able,
        limited: (replicas != stabilized, reason.0, reason.1),
    }
}

fn up_limit(h: &History, current: i32, r: &Rules, now: Instant) -> i32 {
    if r.select == "Disabled" {
        return current;
    }
    let min = r.select == "Min";
    let mut result = if min { i32::MAX } else { i32::MIN };
    for p in &r.policies {
        let start = current - h.changed_within(p.period, true, now)
            + h.changed_within(p.period, false, now);
        let proposed = if p.percent {
            (f64::from(start) * (1.0 + f64::from(p.value) / 100.0)).ceil() as i32
        } else {
            start + p.value
        };
        result = if min {
            result.min(proposed)
        } else {
            result.max(proposed)
        };
    }
    if r.policies.is_empty() {
        current
    } else {
        result
    }
}

fn down_limit(h: &History, current: i32, r: &Rules, now: Instant) -> i32 {
    if r.select == "Disabled" {
        return current;
    }
    let min = r.select == "Min";
    let mut result = if min { i32::MIN } else { i32::MAX };
    for p in &r.policies {
        let start = current - h.changed_within(p.period, true, now)
            + h.changed_within(p.period, false, now);
        let proposed = if p.percent {
            (f64::from(start) * (1.0 - f64::from(p.value) / 100.0)) as i32
        } else {
            start - p.value
        };
        result = if min {
            result.max(proposed)
        } else {
            result.min(proposed)
        };
    }
    if r.policies.is_empty() {
        current
    } else {
        result
    }
}

/// The tolerance of one direction's rules (upstream's default 0.1).
pub fn tolerance(behavior: Option<&HorizontalPodAutoscalerBehavior>, up: bool) -> f64 {
    behavior
        .and_then(|b| {
            if up {
                b.scale_up.as_ref()
            } else {
                b.scale_down.as_ref()
            }
        })
        .and_then(|r| r.tolerance.as_ref())
        .and_then(|q| crate::quantity::milli(&q.0))
        .map(|m| m as f64 / 1000.0)
        .unwrap_or(0.1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn behavior(v: serde_json::Value) -> HorizontalPodAutoscalerBehavior {
        serde_json::from_value(v).expect("behavior")
    }

    #[test]
    fn without_behavior_scale_down_waits_for_the_window_and_scale_up_at_most_doubles() {
        let mut h = History::default();
        let t0 = Instant::now();
        h.start(3, t0);
        let w = Duration::from_secs(300);
        // A lower recommendation inside the window keeps the highest one.
        let n = normalize(&mut h, None, w, 3, 1, 1, 10, t0 + Duration::from_secs(15));
        assert_eq!(n.replicas, 3);
        assert_eq!(n.able.0, "ScaleDownStabilized");
        // After the window it goes through.
        let n = normalize(&mut h, None, w, 3, 1, 1, 10, t0 + Duration::from_secs(400));
        assert_eq!(
            (n.replicas, n.able.0, n.limited.0),
            (1, "ReadyForNewScale", false)
        );
        // From 3, at most 6 at once; the max bounds it below that.
        let n = normalize(&mut h, None, w, 3, 9, 1, 10, t0 + Duration::from_secs(401));
        assert_eq!(
            (n.replicas, n.limited),
            (6, (true, "ScaleUpLimit", UP_LIMIT.1))
        );
        let n = normalize(&mut h, None, w, 3, 9, 1, 5, t0 + Duration::from_secs(402));
        assert_eq!((n.replicas, n.limited.1), (5, "TooManyReplicas"));
    }

    #[test]
    fn policies_limit_the_rate_over_their_period() {
        let b = behavior(json!({
            "scaleUp": {"policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}]},
            "scaleDown": {"stabilizationWindowSeconds": 0},
        }));
        let mut h = History::default();
        let t0 = Instant::now();
        h.start(2, t0);
        let n = normalize(&mut h, Some(&b), Duration::ZERO, 2, 10, 1, 20, t0);
        assert_eq!((n.replicas, n.limited.1), (4, "ScaleUpLimit"));
        h.rescaled(2, 4, t0);
        // Within the period the two pods are spent.
        let n = normalize(
            &mut h,
            Some(&b),
            Duration::ZERO,
            4,
            10,
            1,
            20,
            t0 + Duration::from_secs(30),
        );
        assert_eq!(n.replicas, 4);
        // Scale-down without a window: straight to the recommendation (default 100 % policy).
        let n = normalize(
            &mut h,
            Some(&b),
            Duration::ZERO,
            4,
            1,
            1,
            20,
            t0 + Duration::from_secs(31),
        );
        assert_eq!((n.replicas, n.able.0), (1, "ReadyForNewScale"));
    }
}
