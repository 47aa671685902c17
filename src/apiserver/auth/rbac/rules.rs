//! RBAC policy rules: what a request is ([`Attributes`]), whether a rule allows it, whether one
//! set of rules covers another (escalation prevention), and upstream's compact rule text.

use serde::{Deserialize, Serialize};

/// One PolicyRule, as stored in Roles and ClusterRoles.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verbs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    #[serde(
        rename = "nonResourceURLs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub non_resource_urls: Vec<String>,
}

/// What a request asks to do, as the authorizers see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    /// Resource requests: the API group, resource, subresource, namespace and name.
    pub resource: Option<ResourceAttrs>,
    /// Non-resource requests: the path.
    pub path: String,
}

/// The resource part of [`Attributes`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourceAttrs {
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// The request's field selector (list and watch), for the Node authorizer.
    pub field_selector: String,
}

fn has(list: &[String], v: &str) -> bool {
    list.iter().any(|x| x == v)
}

fn has_all(list: &[String]) -> bool {
    has(list, "*")
}

/// Whether `pattern` (a nonResourceURL, maybe ending in `*`) matches `path`.
fn url_matches(pattern: &str, path: &str) -> bool {
    pattern == "*"
        || pattern == path
        || pattern
            .strip_suffix('*')
            .is_some_and(|prefix| path.starts_with(prefix))
}

/// Whether a rule's resources name `resource` with `subresource`.
fn resource_matches(rule: &Rule, resource: &str, subresource: &str) -> bool {
    rule.resources.iter().any(|r| {
        r == "*"
            || (subresource.is_empty() && r == resource)
            || (!subresource.is_empty()
                && (r.split_once('/') == Some((resource, subresource))
                    || r.strip_prefix("*/") == Some(subresource)))
    })
}

/// Whether `rule` allows the request.
pub fn allows(rule: &Rule, a: &Attributes) -> bool {
    if !(has_all(&rule.verbs) || has(&rule.verbs, &a.verb)) {
        return false;
    }
    match &a.resource {
        Some(r) => {
            (has_all(&rule.api_groups) || has(&rule.api_groups, &r.group))
                && resource_matches(rule, &r.resource, &r.subresource)
                && (rule.resource_names.is_empty() || has(&rule.resource_names, &r.name))
        }
        None => rule
            .non_resource_urls
            .iter()
            .any(|u| url_matches(u, &a.path)),
    }
}

/// Splits rules into single-verb, single-group, single-resource (and single-name or
/// single-URL) rules, as upstream's coverage check does.
pub fn atoms(rules: &[Rule]) -> Vec<Rule> {
    let mut out = Vec::new();
    for r in rules {
        for verb in &r.verbs {
            for group in &r.api_groups {
                for resource in &r.resources {
                    if r.resource_names.is_empty() {
                        out.push(Rule {
                            verbs: vec![verb.clone()],
                            api_groups: vec![group.clone()],
                            resources: vec![resource.clone()],
                            ..Default::default()
                        });
                    }
                    for name in &r.resource_names {
                        out.push(Rule {
                            verbs: vec![verb.clone()],
                            api_groups: vec![group.clone()],
                            resources: vec![resource.clone()],
                            resource_names: vec![name.clone()],
                            ..Default::default()
                        });
                    }
                }
            }
            for url in &r.non_resource_urls {
                out.push(Rule {
                    verbs: vec![verb.clone()],
                    non_resource_urls: vec![url.clone()],
                    ..Default::default()
                });
            }
        }
    }
    out
}

/// Whether `owner` covers the single-valued rule `atom` (from [`atoms`]).
fn covers_atom(owner: &Rule, atom: &Rule) -> bool {
    let all_in = |owned: &[String], wanted: &[String]| {
        has_all(owned) || wanted.iter().all(|w| has(owned, w))
    };
    if !all_in(&owner.verbs, &atom.verbs) {
        return false;
    }
    if !atom.non_resource_urls.is_empty() {
        return atom.non_resource_urls.iter().all(|w| {
            owner.non_resource_urls.iter().any(|o| {
                // An owned prefix covers a narrower prefix or path, never a wider one.
                o == w || o == "*" || o.strip_suffix('*').is_some_and(|p| w.starts_with(p))
            })
        });
    }
    if !all_in(&owner.api_groups, &atom.api_groups) {
        return false;
    }
    let resources_ok = atom.resources.iter().all(|w| {
        has_all(&owner.resources)
            || has(&owner.resources, w)
            || w.split_once('/').is_some_and(|(_, sub)| {
                owner
                    .resources
                    .iter()
                    .any(|o| o.strip_prefix("*/") == Some(sub))
            })
    });
    resources_ok
        && (owner.resource_names.is_empty()
            || (!atom.resource_names.is_empty()
                && atom
                    .resource_names
                    .iter()
                    .all(|n| has(&owner.resource_names, n))))
}

/// The single-valued rules of `wanted` that no rule of `owned` covers.
pub fn uncovered(owned: &[Rule], wanted: &[Rule]) -> Vec<Rule> {
    atoms(wanted)
        .into_iter()
        .filter(|a| !owned.iter().any(|o| covers_atom(o, a)))
        .collect()
}

/// Merges simple rules (one group, one resource, no names) that differ only in verbs, as
/// upstream's CompactRules does, keeping first-seen order.
pub fn compact(rules: Vec<Rule>) -> Vec<Rule> {
    let mut out: Vec<Rule> = Vec::new();
    for r in rules {
        let simple = r.api_groups.len() == 1
            && r.resources.len() == 1
            && r.resource_names.is_empty()
            && r.non_resource_urls.is_empty();
        if simple {
            if let Some(existing) = out.iter_mut().find(|e| {
                e.api_groups == r.api_groups
                    && e.resources == r.resources
                    && e.resource_names.is_empty()
                    && e.non_resource_urls.is_empty()
            }) {
                for v in r.verbs {
                    if !existing.verbs.contains(&v) {
                        existing.verbs.push(v);
                    }
                }
                continue;
            }
        }
        out.push(r);
    }
    out
}

/// Go's `%q` of a string slice: `["a" "b"]`.
pub fn quoted(list: &[String]) -> String {
    let items: Vec<String> = list
        .iter()
        .map(|s| serde_json::to_string(s).unwrap_or_default())
        .collect();
    format!("[{}]", items.join(" "))
}

/// Upstream's PolicyRule.CompactString: `{APIGroups:[""], Resources:["pods"], Verbs:["get"]}`.
pub fn compact_string(r: &Rule) -> String {
    let mut parts = Vec::new();
    for (label, list) in [
        ("APIGroups", &r.api_groups),
        ("Resources", &r.resources),
        ("NonResourceURLs", &r.non_resource_urls),
        ("ResourceNames", &r.resource_names),
        ("Verbs", &r.verbs),
    ] {
        if !list.is_empty() {
            parts.push(format!("{label}:{}", quoted(list)));
        }
    }
    format!("{{{}}}", parts.join(", "))
}

/// Upstream's PolicyRule.String, the sort key of missing-permission lists.
pub fn sort_key(r: &Rule) -> String {
    format!(
        "PolicyRule{{APIGroups:{}, Resources:{}, ResourceNames:{}, NonResourceURLs:{}, Verbs:{}}}",
        quoted(&r.api_groups),
        quoted(&r.resources),
        quoted(&r.resource_names),
        quoted(&r.non_resource_urls),
        quoted(&r.verbs)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> Rule {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        Rule {
            verbs: v(verbs),
            api_groups: v(groups),
            resources: v(resources),
            resource_names: v(names),
            non_resource_urls: vec![],
        }
    }

    fn res(verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource: Some(ResourceAttrs {
                group: group.into(),
                resource: resource.into(),
                subresource: sub.into(),
                namespace: "ns".into(),
                name: name.into(),
                ..Default::default()
            }),
            path: String::new(),
        }
    }

    #[test]
    fn rules_match_verbs_groups_resources_subresources_and_names() {
        let r = rule(&["get", "list"], &[""], &["pods", "pods/log"], &[]);
        assert!(allows(&r, &res("get", "", "pods", "", "a")));
        assert!(allows(&r, &res("get", "", "pods", "log", "a")));
        assert!(!allows(&r, &res("get", "", "pods", "exec", "a")));
        assert!(!allows(&r, &res("delete", "", "pods", "", "a")));
        assert!(!allows(&r, &res("get", "apps", "pods", "", "a")));
        let star = rule(&["*"], &["*"], &["*"], &[]);
        assert!(allows(
            &star,
            &res("escalate", "x.io", "things", "status", "n")
        ));
        let scale = rule(&["update"], &["apps"], &["*/scale"], &[]);
        assert!(allows(
            &scale,
            &res("update", "apps", "deployments", "scale", "d")
        ));
        assert!(!allows(
            &scale,
            &res("update", "apps", "deployments", "", "d")
        ));
        let named = rule(&["get"], &[""], &["configmaps"], &["one"]);
        assert!(allows(&named, &res("get", "", "configmaps", "", "one")));
        assert!(!allows(&named, &res("get", "", "configmaps", "", "two")));
        assert!(!allows(&named, &res("list", "", "configmaps", "", "")));
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_prefix() {
        let r = Rule {
            verbs: vec!["get".into()],
            non_resource_urls: vec!["/healthz".into(), "/apis/*".into()],
            ..Default::default()
        };
        let at = |path: &str| Attributes {
            verb: "get".into(),
            resource: None,
            path: path.into(),
        };
        assert!(allows(&r, &at("/healthz")));
        assert!(allows(&r, &at("/apis/apps/v1")));
        assert!(!allows(&r, &at("/healthz/etcd")));
        assert!(!allows(&r, &at("/metrics")));
    }

    #[test]
    fn coverage_finds_the_missing_permissions() {
        let owned = vec![
            rule(&["get", "list"], &[""], &["pods"], &[]),
            rule(&["*"], &["apps"], &["*/scale"], &[]),
        ];
        let wanted = vec![rule(&["get", "delete"], &[""], &["pods"], &[])];
        let missing = uncovered(&owned, &wanted);
        assert_eq!(missing, vec![rule(&["delete"], &[""], &["pods"], &[])]);
        assert_eq!(
            compact_string(&missing[0]),
            r#"{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}"#
        );
        assert!(uncovered(
            &owned,
            &[rule(&["patch"], &["apps"], &["deployments/scale"], &[])]
        )
        .is_empty());
        // A wildcard asked for is only covered by a wildcard held.
        assert_eq!(
            uncovered(&owned, &[rule(&["get"], &[""], &["*"], &[])]).len(),
            1
        );
        let named = vec![rule(&["get"], &[""], &["secrets"], &["a"])];
        assert!(uncovered(&named, &[rule(&["get"], &[""], &["secrets"], &["a"])]).is_empty());
        assert_eq!(
            uncovered(&named, &[rule(&["get"], &[""], &["secrets"], &[])]).len(),
            1
        );
    }

    #[test]
    fn compaction_merges_verbs_of_simple_rules() {
        let merged = compact(vec![
            rule(&["get"], &[""], &["pods"], &[]),
            rule(&["list"], &[""], &["pods"], &[]),
            rule(&["get"], &[""], &["secrets"], &["x"]),
        ]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].verbs, vec!["get", "list"]);
    }
}
