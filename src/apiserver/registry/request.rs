//! Request parsing, pure: what a resource request asks for, as upstream's `RequestInfo`.

use axum::http::Method;

/// What a request under `/api` or `/apis` is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    pub verb: &'static str,
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub resource: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// The request parameters the registry reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub watch: bool,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub limit: usize,
    pub continue_token: Option<String>,
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub timeout_seconds: Option<u64>,
    pub allow_watch_bookmarks: bool,
    pub send_initial_events: Option<bool>,
    pub dry_run: bool,
    pub field_manager: Option<String>,
    /// `force=true`: a server-side apply takes over conflicting fields.
    pub force: bool,
    pub field_validation: Option<String>,
    pub include_object: Option<String>,
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
}

fn truthy(v: &str) -> bool {
    v == "true" || v == "1"
}

/// Percent-decodes a query value (`+` is a space).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the query string.
pub fn parse_query(raw: Option<&str>) -> Query {
    let mut q = Query::default();
    for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = decode(v);
        match k {
            "watch" => q.watch = truthy(&v),
            "resourceVersion" => q.resource_version = Some(v),
            "resourceVersionMatch" => q.resource_version_match = Some(v),
            "limit" => q.limit = v.parse().unwrap_or(0),
            "continue" => q.continue_token = Some(v).filter(|s| !s.is_empty()),
            "labelSelector" => q.label_selector = Some(v).filter(|s| !s.is_empty()),
            "fieldSelector" => q.field_selector = Some(v).filter(|s| !s.is_empty()),
            "timeoutSeconds" => q.timeout_seconds = v.parse().ok(),
            "allowWatchBookmarks" => q.allow_watch_bookmarks = truthy(&v),
            "sendInitialEvents" => q.send_initial_events = Some(truthy(&v)),
            "dryRun" => q.dry_run = v == "All",
            "fieldManager" => q.field_manager = Some(v),
            "force" => q.force = v == "true",
            "fieldValidation" => q.field_validation = Some(v),
            "includeObject" => q.include_object = Some(v),
            "gracePeriodSeconds" => q.grace_period_seconds = v.parse().ok(),
            "propagationPolicy" => q.propagation_policy = Some(v),
            _ => {}
        }
    }
    q
}

/// Parses a resource path (`/api/v1/...` or `/apis/GROUP/VERSION/...`); `None` if it is not one.
pub fn parse(method: &Method, path: &str, watch: bool) -> Option<RequestInfo> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => (String::new(), v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (g.to_string(), v.to_string(), rest),
        _ => return None,
    };
    let mut rest: Vec<&str> = rest.to_vec();
    // The deprecated /watch/ prefix.
    let legacy_watch = rest.first() == Some(&"watch");
    if legacy_watch {
        rest.remove(0);
    }
    let mut namespace = None;
    // `namespaces/NAME/status` and `namespaces/NAME/finalize` are subresources of a namespace.
    let namespace_subresource =
        rest.len() == 3 && rest[0] == "namespaces" && matches!(rest[2], "status" | "finalize");
    if rest.len() >= 3 && rest[0] == "namespaces" && !namespace_subresource {
        namespace = Some(rest[1].to_string());
        rest.drain(..2);
    }
    let resource = rest.first()?.to_string();
    if resource.is_empty() {
        return None;
    }
    let name = rest.get(1).map(|s| s.to_string());
    let subresource = rest.get(2).map(|s| s.to_string());
    let verb = match (method.as_str(), name.is_some()) {
        ("GET" | "HEAD", _) if watch || legacy_watch => "watch",
        ("GET" | "HEAD", true) => "get",
        ("GET" | "HEAD", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return None,
    };
    Some(RequestInfo {
        verb,
        group,
        version,
        namespace,
        resource,
        name,
        subresource,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(m: Method, path: &str) -> RequestInfo {
        parse(&m, path, false).expect("resource path")
    }

    #[test]
    fn paths_parse_like_upstream() {
        let r = p(Method::GET, "/api/v1/namespaces/default/pods/web/status");
        assert_eq!(r.verb, "get");
        assert_eq!(r.namespace.as_deref(), Some("default"));
        assert_eq!(r.resource, "pods");
        assert_eq!(r.name.as_deref(), Some("web"));
        assert_eq!(r.subresource.as_deref(), Some("status"));
        let r = p(Method::GET, "/apis/apps/v1/deployments");
        assert_eq!(
            (r.verb, r.group.as_str(), r.resource.as_str()),
            ("list", "apps", "deployments")
        );
        let r = p(Method::GET, "/api/v1/namespaces/kube-system");
        assert_eq!(
            (r.resource.as_str(), r.name.as_deref(), r.namespace),
            ("namespaces", Some("kube-system"), None)
        );
        let r = p(Method::DELETE, "/api/v1/namespaces/default/configmaps");
        assert_eq!(r.verb, "deletecollection");
        let r = p(Method::GET, "/api/v1/watch/namespaces/default/pods");
        assert_eq!(r.verb, "watch");
        assert_eq!(
            parse(&Method::GET, "/api/v1/pods", true)
                .expect("watch")
                .verb,
            "watch"
        );
        assert!(parse(&Method::GET, "/healthz", false).is_none());
    }

    #[test]
    fn query_values_are_decoded() {
        let q = parse_query(Some(
            "labelSelector=app%3Dweb%2Ctier+in+(a)&limit=5&watch=1&dryRun=All",
        ));
        assert_eq!(q.label_selector.as_deref(), Some("app=web,tier in (a)"));
        assert_eq!(q.limit, 5);
        assert!(q.watch && q.dry_run);
        assert_eq!(decode("100%"), "100%");
    }
}
