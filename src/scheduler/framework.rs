//! The scheduling framework, as kube-scheduler's: filter plugins say which nodes a pod fits
//! (each refusal with upstream's reason and whether preemption could help), score plugins rank
//! the nodes that fit (each score normalised to 0-100, then weighted), and a failure is reported
//! with upstream's message: `0/3 nodes are available: 1 node(s) had untolerated taint(s),
//! 2 Insufficient cpu. ...`.

use std::collections::BTreeMap;

use super::cache::{NodeInfo, PodInfo};

/// Why a node does not fit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Whether evicting lower-priority pods could make room (upstream's `Unschedulable`, as
    /// against `UnschedulableAndUnresolvable`).
    pub resolvable: bool,
    pub reasons: Vec<String>,
}

impl Rejection {
    pub fn unresolvable(reason: &str) -> Rejection {
        Rejection {
            resolvable: false,
            reasons: vec![reason.to_string()],
        }
    }

    pub fn resolvable(reasons: Vec<String>) -> Rejection {
        Rejection {
            resolvable: true,
            reasons,
        }
    }
}

/// A filter and/or score plugin.
pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;

    /// Works out, once per scheduling attempt, what `filter` and `score` need about the whole
    /// cluster (upstream's PreFilter and PreScore).
    fn prefilter(&self, _pod: &PodInfo, _cache: &super::cache::Cache) {}

    /// `Some` when the pod does not fit the node.
    fn filter(&self, _pod: &PodInfo, _node: &NodeInfo) -> Option<Rejection> {
        None
    }

    /// Whether this plugin scores.
    fn scores(&self) -> bool {
        false
    }

    /// The raw score of a node that fits.
    fn score(&self, _pod: &PodInfo, _node: &NodeInfo) -> i64 {
        0
    }

    /// Brings raw scores to 0-100 (the default leaves them as they are).
    fn normalize(&self, _scores: &mut [i64]) {}

    fn weight(&self) -> i64 {
        1
    }
}

/// Scales scores so the highest is 100; `reverse` makes the lowest raw score the best.
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = 100);
        }
        return;
    }
    for s in scores.iter_mut() {
        *s = *s * 100 / max;
        if reverse {
            *s = 100 - *s;
        }
    }
}

/// Why a pod fits no node.
#[derive(Clone, Debug, Default)]
pub struct FitError {
    pub nodes: usize,
    /// Per node that was tried: its rejection.
    pub rejections: BTreeMap<String, Rejection>,
    /// Whether the pod may preempt others (`preemptionPolicy` is not Never).
    pub may_preempt: bool,
    /// Whether preemption found a node (then the message says nothing about preemption).
    pub nominated: bool,
}

impl FitError {
    /// Upstream's FailedScheduling message.
    pub fn message(&self) -> String {
        if self.nodes == 0 {
            return "no nodes available to schedule pods".into();
        }
        let mut histogram: BTreeMap<&str, usize> = BTreeMap::new();
        for r in self.rejections.values() {
            for reason in &r.reasons {
                *histogram.entry(reason).or_default() += 1;
            }
        }
        let mut parts: Vec<String> = histogram
            .iter()
            .map(|(reason, n)| format!("{n} {reason}"))
            .collect();
        parts.sort();
        if self.nominated {
            return format!(
                "0/{} nodes are available: {}.",
                self.nodes,
                parts.join(", ")
            );
        }
        let preemption = if self.may_preempt {
            let helpless = self.rejections.values().filter(|r| !r.resolvable).count();
            let victimless = self.rejections.len() - helpless;
            let mut p = Vec::new();
            if helpless > 0 {
                p.push(format!(
                    "{helpless} Preemption is not helpful for scheduling"
                ));
            }
            if victimless > 0 {
                p.push(format!(
                    "{victimless} No preemption victims found for incoming pod"
                ));
            }
            p.sort();
            format!("0/{} nodes are available: {}.", self.nodes, p.join(", "))
        } else {
            "not eligible due to preemptionPolicy=Never.".into()
        };
        format!(
            "0/{} nodes are available: {}. no new claims to deallocate, preemption: {preemption}",
            self.nodes,
            parts.join(", ")
        )
    }
}

/// How many feasible nodes to find before scoring (upstream's adaptive
/// `percentageOfNodesToScore`): every node below 100, else 50% less 1% per 125 nodes, at
/// least 5% and at least 100 nodes.
pub fn feasible_wanted(all: usize) -> usize {
    if all < 100 {
        return all;
    }
    let pct = (50 - (all as i64) / 125).max(5) as usize;
    (all * pct / 100).max(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failure_message_is_upstreams() {
        let mut e = FitError {
            nodes: 3,
            may_preempt: true,
            ..Default::default()
        };
        e.rejections.insert(
            "a".into(),
            Rejection::unresolvable("node(s) had untolerated taint(s)"),
        );
        for n in ["b", "c"] {
            e.rejections.insert(
                n.into(),
                Rejection::resolvable(vec!["Insufficient cpu".into()]),
            );
        }
        assert_eq!(
            e.message(),
            "0/3 nodes are available: 1 node(s) had untolerated taint(s), 2 Insufficient cpu. no new claims to deallocate, preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod."
        );
        assert_eq!(
            FitError::default().message(),
            "no nodes available to schedule pods"
        );
    }

    #[test]
    fn large_clusters_score_a_share_of_their_nodes() {
        assert_eq!(feasible_wanted(50), 50);
        assert_eq!(feasible_wanted(1000), 420);
        assert_eq!(feasible_wanted(5000), 500);
        assert_eq!(
            feasible_wanted(200),
            100,
            "49% is 98, raised to the 100-node minimum"
        );
    }
}
