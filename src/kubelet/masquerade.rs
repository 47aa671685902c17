//! Outbound NAT for the node's pods, one chain per node as flannel does for k3s, instead of the
//! bridge plugin's `ipMasq` (a chain and three iptables runs per pod on every start and stop, a
//! tenth of a pod start's CPU here). Traffic from the pod CIDR to anywhere but the pod CIDR and
//! multicast leaves with the node's address:
//!
//! ```text
//! -t nat -A POSTROUTING -s POD_CIDR -m comment --comment "k1s: masquerade pods on BRIDGE" -j K1S-MASQ-BRIDGE
//! -t nat -A K1S-MASQ-BRIDGE -d POD_CIDR -j RETURN
//! -t nat -A K1S-MASQ-BRIDGE ! -d 224.0.0.0/4 -j MASQUERADE
//! ```
//!
//! The commands go through [`Iptables`], so the policy is tested with a recorded fake.

use std::process::Command;

/// Why the rules could not be set.
#[derive(Debug, thiserror::Error)]
pub enum MasqueradeError {
    #[error("running iptables {args}: {source}")]
    Spawn {
        args: String,
        source: std::io::Error,
    },
    #[error("iptables {args}: {stderr}")]
    Failed { args: String, stderr: String },
}

/// Runs `iptables ARGS` and returns what it printed.
pub trait Iptables {
    fn run(&self, args: &[&str]) -> Result<String, MasqueradeError>;
}

/// This machine's `iptables`, waiting for the xtables lock.
pub struct System;

impl Iptables for System {
    fn run(&self, args: &[&str]) -> Result<String, MasqueradeError> {
        let shown = args.join(" ");
        let out = Command::new("iptables")
            .arg("-w")
            .args(args)
            .output()
            .map_err(|source| MasqueradeError::Spawn {
                args: shown.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(MasqueradeError::Failed {
                args: shown,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The chain of the node whose pods are on `bridge` (chain names hold at most 28 characters;
/// bridge names 15).
pub fn chain(bridge: &str) -> String {
    format!("K1S-MASQ-{bridge}")
}

/// The POSTROUTING rules that jump to `chain`, as `iptables -S` prints them.
fn jumps<'a>(listing: &'a str, chain: &str) -> Vec<&'a str> {
    let target = format!("-j {chain}");
    listing
        .lines()
        .filter(|l| l.starts_with("-A POSTROUTING ") && l.trim_end().ends_with(&target))
        .collect()
}

/// Removes the jumps to the chain of `bridge` and the chain (nothing there: nothing done).
pub fn remove(ipt: &dyn Iptables, bridge: &str) -> Result<(), MasqueradeError> {
    let chain = chain(bridge);
    let listing = ipt.run(&["-t", "nat", "-S", "POSTROUTING"])?;
    for rule in jumps(&listing, &chain) {
        let mut args = vec!["-t", "nat", "-D"];
        args.extend(split(&rule["-A ".len()..]));
        ipt.run(&args)?;
    }
    let chains = ipt.run(&["-t", "nat", "-S"])?;
    if chains
        .lines()
        .any(|l| l.trim_end() == format!("-N {chain}"))
    {
        ipt.run(&["-t", "nat", "-F", &chain])?;
        ipt.run(&["-t", "nat", "-X", &chain])?;
    }
    Ok(())
}

/// Whether the rules for `pod_cidr` on `bridge` are all there, and nothing else.
fn in_place(ipt: &dyn Iptables, bridge: &str, pod_cidr: &str) -> Result<bool, MasqueradeError> {
    let chain = chain(bridge);
    let Ok(rules) = ipt.run(&["-t", "nat", "-S", &chain]) else {
        return Ok(false);
    };
    let rules: Vec<&str> = rules
        .lines()
        .map(str::trim_end)
        .filter(|l| l.starts_with("-A "))
        .collect();
    let want = [
        format!("-A {chain} -d {pod_cidr} -j RETURN"),
        format!("-A {chain} ! -d 224.0.0.0/4 -j MASQUERADE"),
    ];
    if rules != want {
        return Ok(false);
    }
    let listing = ipt.run(&["-t", "nat", "-S", "POSTROUTING"])?;
    let jumps = jumps(&listing, &chain);
    Ok(jumps.len() == 1 && jumps[0].starts_with(&format!("-A POSTROUTING -s {pod_cidr} ")))
}

/// Sets the rules for the pods of `pod_cidr` on `bridge`; rules already in place are left
/// alone (a restarted kubelet never drops NAT), others (an earlier pod CIDR, a flushed table)
/// are replaced. Whether anything changed.
pub fn ensure(ipt: &dyn Iptables, bridge: &str, pod_cidr: &str) -> Result<bool, MasqueradeError> {
    if in_place(ipt, bridge, pod_cidr)? {
        return Ok(false);
    }
    remove(ipt, bridge)?;
    let chain = chain(bridge);
    let comment = format!("k1s: masquerade pods on {bridge}");
    ipt.run(&["-t", "nat", "-N", &chain])?;
    ipt.run(&["-t", "nat", "-A", &chain, "-d", pod_cidr, "-j", "RETURN"])?;
    ipt.run(&[
        "-t",
        "nat",
        "-A",
        &chain,
        "!",
        "-d",
        "224.0.0.0/4",
        "-j",
        "MASQUERADE",
    ])?;
    ipt.run(&[
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-s",
        pod_cidr,
        "-m",
        "comment",
        "--comment",
        &comment,
        "-j",
        &chain,
    ])?;
    Ok(true)
}

/// Removes the per-pod chains the bridge plugin's `ipMasq` made for pods of a k1s from before
/// the one-chain NAT (the network `k1s`; deleting such a pod later no longer removed them), and
/// their jumps; how many there were. The node's chain covers those pods' traffic.
pub fn remove_legacy(ipt: &dyn Iptables) -> Result<usize, MasqueradeError> {
    let listing = ipt.run(&["-t", "nat", "-S", "POSTROUTING"])?;
    let mut removed = 0;
    for line in listing.lines() {
        let Some(rule) = line.trim_end().strip_prefix("-A POSTROUTING ") else {
            continue;
        };
        let Some((matches, chain)) = rule.rsplit_once(" -j ") else {
            continue;
        };
        let Some((source, comment)) = matches.split_once(" -m comment --comment ") else {
            continue;
        };
        // iptables prints the comment quoted, its own quotes escaped.
        let comment = comment.trim();
        let comment = comment
            .strip_prefix('"')
            .and_then(|c| c.strip_suffix('"'))
            .unwrap_or(comment)
            .replace("\\\"", "\"");
        if !chain.starts_with("CNI-") || !comment.starts_with("name: \"k1s\" id: ") {
            continue;
        }
        let mut args = vec!["-t", "nat", "-D", "POSTROUTING"];
        args.extend(source.split_whitespace());
        args.extend(["-m", "comment", "--comment", &comment, "-j", chain]);
        ipt.run(&args)?;
        ipt.run(&["-t", "nat", "-F", chain])?;
        ipt.run(&["-t", "nat", "-X", chain])?;
        removed += 1;
    }
    Ok(removed)
}

/// Splits an `iptables -S` rule into arguments, keeping quoted comments whole.
fn split(rule: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = rule.trim();
    while !rest.is_empty() {
        if let Some(q) = rest.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            out.push(&q[..end]);
            rest = q.get(end + 1..).unwrap_or("").trim_start();
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            out.push(&rest[..end]);
            rest = rest[end..].trim_start();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records the commands; answers listings with what it was given.
    struct Fake {
        ran: Mutex<Vec<String>>,
        postrouting: String,
        chains: String,
    }

    impl Fake {
        fn chain_rules(&self, chain: &str) -> String {
            match chain {
                "K1S-MASQ-k1s0" => "-N K1S-MASQ-k1s0\n\
                    -A K1S-MASQ-k1s0 -d 10.42.0.0/24 -j RETURN\n\
                    -A K1S-MASQ-k1s0 ! -d 224.0.0.0/4 -j MASQUERADE\n"
                    .into(),
                _ => String::new(),
            }
        }
    }

    impl Iptables for Fake {
        fn run(&self, args: &[&str]) -> Result<String, MasqueradeError> {
            self.ran.lock().expect("lock").push(args.join(" "));
            Ok(match args {
                ["-t", "nat", "-S", "POSTROUTING"] => self.postrouting.clone(),
                ["-t", "nat", "-S"] => self.chains.clone(),
                ["-t", "nat", "-S", chain] => self.chain_rules(chain),
                _ => String::new(),
            })
        }
    }

    #[test]
    fn one_chain_per_node_replacing_an_earlier_one() {
        let fake = Fake {
            ran: Mutex::new(Vec::new()),
            postrouting: "-P POSTROUTING ACCEPT\n\
                -A POSTROUTING -s 10.42.0.0/24 -m comment --comment \"k1s: masquerade pods on k1s0\" -j K1S-MASQ-k1s0\n\
                -A POSTROUTING -s 10.9.0.0/24 -j K1S-MASQ-k1s9\n"
                .into(),
            chains: "-P PREROUTING ACCEPT\n-N K1S-MASQ-k1s0\n-N K1S-MASQ-k1s9\n".into(),
        };
        assert!(ensure(&fake, "k1s0", "10.42.1.0/24").expect("ensure"));
        let ran = fake.ran.into_inner().expect("lock");
        assert_eq!(
            ran,
            [
                "-t nat -S K1S-MASQ-k1s0",
                "-t nat -S POSTROUTING",
                "-t nat -D POSTROUTING -s 10.42.0.0/24 -m comment --comment k1s: masquerade pods on k1s0 -j K1S-MASQ-k1s0",
                "-t nat -S",
                "-t nat -F K1S-MASQ-k1s0",
                "-t nat -X K1S-MASQ-k1s0",
                "-t nat -N K1S-MASQ-k1s0",
                "-t nat -A K1S-MASQ-k1s0 -d 10.42.1.0/24 -j RETURN",
                "-t nat -A K1S-MASQ-k1s0 ! -d 224.0.0.0/4 -j MASQUERADE",
                "-t nat -A POSTROUTING -s 10.42.1.0/24 -m comment --comment k1s: masquerade pods on k1s0 -j K1S-MASQ-k1s0",
            ]
        );
    }

    #[test]
    fn rules_in_place_are_left_alone() {
        let fake = Fake {
            ran: Mutex::new(Vec::new()),
            postrouting: "-A POSTROUTING -s 10.42.0.0/24 -m comment --comment \"k1s: masquerade pods on k1s0\" -j K1S-MASQ-k1s0\n".into(),
            chains: String::new(),
        };
        assert!(!ensure(&fake, "k1s0", "10.42.0.0/24").expect("ensure"));
        let ran = fake.ran.into_inner().expect("lock");
        assert_eq!(ran, ["-t nat -S K1S-MASQ-k1s0", "-t nat -S POSTROUTING"]);
    }

    #[test]
    fn legacy_per_pod_chains_of_k1s_go() {
        let fake = Fake {
            ran: Mutex::new(Vec::new()),
            postrouting: "-P POSTROUTING ACCEPT\n\
                -A POSTROUTING -s 10.42.0.5/32 -m comment --comment \"name: \\\"k1s\\\" id: \\\"abc\\\"\" -j CNI-0123\n\
                -A POSTROUTING -s 10.88.0.5/32 -m comment --comment \"name: \\\"other\\\" id: \\\"def\\\"\" -j CNI-4567\n\
                -A POSTROUTING -s 10.42.0.0/24 -m comment --comment \"k1s: masquerade pods on k1s0\" -j K1S-MASQ-k1s0\n"
                .into(),
            chains: String::new(),
        };
        assert_eq!(remove_legacy(&fake).expect("remove"), 1);
        let ran = fake.ran.into_inner().expect("lock");
        assert_eq!(
            ran,
            [
                "-t nat -S POSTROUTING",
                "-t nat -D POSTROUTING -s 10.42.0.5/32 -m comment --comment name: \"k1s\" id: \"abc\" -j CNI-0123",
                "-t nat -F CNI-0123",
                "-t nat -X CNI-0123",
            ]
        );
    }

    #[test]
    fn quoted_comments_stay_one_argument() {
        assert_eq!(
            split("POSTROUTING -m comment --comment \"a b\" -j X"),
            [
                "POSTROUTING",
                "-m",
                "comment",
                "--comment",
                "a b",
                "-j",
                "X"
            ]
        );
    }
}
