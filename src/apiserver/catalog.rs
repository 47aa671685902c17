//! The resource catalog: every built-in resource k1s serves, derived at build time from
//! upstream's OpenAPI document (`build.rs`), plus what OpenAPI does not carry: short names and
//! categories, as upstream's discovery lists them.

/// One served resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceDef {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
    /// Sorted, as upstream's discovery lists them.
    pub verbs: &'static [&'static str],
    pub subresources: &'static [SubresourceDef],
}

/// One subresource of a resource, with the kind it answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubresourceDef {
    pub name: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
}

include!(concat!(env!("OUT_DIR"), "/catalog.rs"));

impl ResourceDef {
    /// The lowercase singular name (upstream: the kind, lowercased).
    pub fn singular(&self) -> String {
        self.kind.to_lowercase()
    }

    /// Whether the resource has the subresource `name` (e.g. `status`).
    pub fn has_subresource(&self, name: &str) -> bool {
        self.subresources.iter().any(|s| s.name == name)
    }

    /// `group/version`, or just `version` for the core group.
    pub fn group_version(&self) -> String {
        group_version(self.group, self.version)
    }

    /// Upstream's short names for this resource.
    pub fn short_names(&self) -> &'static [&'static str] {
        SHORT_NAMES
            .iter()
            .find(|(g, p, _)| *g == self.group && *p == self.plural)
            .map(|(_, _, s)| *s)
            .unwrap_or(&[])
    }

    /// Upstream's categories (`all` is what `kubectl get all` reads).
    pub fn categories(&self) -> &'static [&'static str] {
        if ALL_CATEGORY
            .iter()
            .any(|(g, p)| *g == self.group && *p == self.plural)
        {
            &["all"]
        } else if API_EXTENSIONS.contains(&self.plural) {
            &["api-extensions"]
        } else {
            &[]
        }
    }
}

/// `group/version`, or just `version` for the core group.
pub fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

const SHORT_NAMES: &[(&str, &str, &[&str])] = &[
    ("", "componentstatuses", &["cs"]),
    ("", "configmaps", &["cm"]),
    ("", "endpoints", &["ep"]),
    ("", "events", &["ev"]),
    ("", "limitranges", &["limits"]),
    ("", "namespaces", &["ns"]),
    ("", "nodes", &["no"]),
    ("", "persistentvolumeclaims", &["pvc"]),
    ("", "persistentvolumes", &["pv"]),
    ("", "pods", &["po"]),
    ("", "replicationcontrollers", &["rc"]),
    ("", "resourcequotas", &["quota"]),
    ("", "serviceaccounts", &["sa"]),
    ("", "services", &["svc"]),
    (
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        &["crd", "crds"],
    ),
    ("apps", "daemonsets", &["ds"]),
    ("apps", "deployments", &["deploy"]),
    ("apps", "replicasets", &["rs"]),
    ("apps", "statefulsets", &["sts"]),
    ("autoscaling", "horizontalpodautoscalers", &["hpa"]),
    ("batch", "cronjobs", &["cj"]),
    (
        "certificates.k8s.io",
        "certificatesigningrequests",
        &["csr"],
    ),
    ("events.k8s.io", "events", &["ev"]),
    ("networking.k8s.io", "ingresses", &["ing"]),
    ("networking.k8s.io", "ipaddresses", &["ip"]),
    ("networking.k8s.io", "networkpolicies", &["netpol"]),
    ("policy", "poddisruptionbudgets", &["pdb"]),
    ("scheduling.k8s.io", "priorityclasses", &["pc"]),
    ("storage.k8s.io", "storageclasses", &["sc"]),
    ("storage.k8s.io", "volumeattributesclasses", &["vac"]),
];

const ALL_CATEGORY: &[(&str, &str)] = &[
    ("", "pods"),
    ("", "replicationcontrollers"),
    ("", "services"),
    ("apps", "daemonsets"),
    ("apps", "deployments"),
    ("apps", "replicasets"),
    ("apps", "statefulsets"),
    ("autoscaling", "horizontalpodautoscalers"),
    ("batch", "cronjobs"),
    ("batch", "jobs"),
];

const API_EXTENSIONS: &[&str] = &[
    "apiservices",
    "customresourcedefinitions",
    "mutatingadmissionpolicies",
    "mutatingadmissionpolicybindings",
    "mutatingwebhookconfigurations",
    "validatingadmissionpolicies",
    "validatingadmissionpolicybindings",
    "validatingwebhookconfigurations",
];

/// Upstream's order of groups in `/apis`; groups not named here follow in name order.
const GROUP_ORDER: &[&str] = &[
    "apiregistration.k8s.io",
    "apps",
    "events.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "networking.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "scheduling.k8s.io",
    "coordination.k8s.io",
    "node.k8s.io",
    "discovery.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "resource.k8s.io",
];

/// The named groups served, in upstream's order.
pub fn groups() -> Vec<&'static str> {
    let mut groups: Vec<&'static str> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && !groups.contains(&r.group) {
            groups.push(r.group);
        }
    }
    groups.sort_by_key(|g| {
        (
            GROUP_ORDER
                .iter()
                .position(|o| o == g)
                .unwrap_or(usize::MAX),
            *g,
        )
    });
    groups
}

/// Kubernetes version priority: GA above beta above alpha, higher numbers first.
fn version_rank(v: &str) -> (u8, u32, u32) {
    let rest = v.trim_start_matches('v');
    let (major, tail) = rest
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| rest.split_at(i))
        .unwrap_or((rest, ""));
    let major = major.parse().unwrap_or(0);
    let (stage, minor) = if let Some(n) = tail.strip_prefix("beta") {
        (1, n.parse().unwrap_or(0))
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (0, n.parse().unwrap_or(0))
    } else {
        (2, 0)
    };
    (stage, major, minor)
}

/// The versions of `group` served, preferred first.
pub fn versions(group: &str) -> Vec<&'static str> {
    let mut versions: Vec<&'static str> = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == group) {
        if !versions.contains(&r.version) {
            versions.push(r.version);
        }
    }
    versions.sort_by_key(|v| std::cmp::Reverse(version_rank(v)));
    versions
}

/// The resources of one group version.
pub fn resources<'a>(
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'static ResourceDef> + use<'a> {
    RESOURCES
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

/// Every served resource, in every version.
pub fn all() -> impl Iterator<Item = &'static ResourceDef> {
    RESOURCES.iter()
}

/// One resource by group, version and plural name.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_as_upstream_lists_them() {
        let pods = find("", "v1", "pods").expect("pods");
        assert_eq!(pods.kind, "Pod");
        assert!(pods.namespaced);
        assert_eq!(
            pods.verbs,
            &[
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch"
            ]
        );
        assert_eq!(pods.short_names(), &["po"]);
        assert_eq!(pods.categories(), &["all"]);
        let eviction = pods
            .subresources
            .iter()
            .find(|s| s.name == "eviction")
            .expect("eviction");
        assert_eq!((eviction.group, eviction.kind), ("policy", "Eviction"));
        let scale = find("apps", "v1", "deployments")
            .expect("deployments")
            .subresources
            .iter()
            .find(|s| s.name == "scale")
            .expect("scale");
        assert_eq!(
            (scale.group, scale.version, scale.kind),
            ("autoscaling", "v1", "Scale")
        );
    }

    #[test]
    fn scopes_and_verbs_of_cluster_resources() {
        let ns = find("", "v1", "namespaces").expect("namespaces");
        assert!(!ns.namespaced);
        assert!(!ns.verbs.contains(&"deletecollection"));
        assert!(!find("", "v1", "nodes").expect("nodes").namespaced);
        let sar = find("authorization.k8s.io", "v1", "subjectaccessreviews").expect("sar");
        assert_eq!(sar.verbs, &["create"]);
    }

    #[test]
    fn only_stable_versions_and_preferred_first() {
        // metrics.k8s.io is v1beta1 upstream too (metrics-server's group, served by k1s).
        assert!(RESOURCES
            .iter()
            .filter(|r| r.group != "metrics.k8s.io")
            .all(|r| !r.version.contains("alpha") && !r.version.contains("beta")));
        assert_eq!(versions("autoscaling"), vec!["v2", "v1"]);
        assert_eq!(groups()[0], "apiregistration.k8s.io");
        assert!(version_rank("v1") > version_rank("v1beta2"));
        assert!(version_rank("v1beta2") > version_rank("v1beta1"));
        assert!(version_rank("v1beta1") > version_rank("v1alpha1"));
    }
}
