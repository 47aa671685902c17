//! Key layout: where each object lives in the store, as kube-apiserver lays it out in etcd.
//!
//! Objects live under `/registry/RESOURCE/NAMESPACE/NAME` (namespaced) or
//! `/registry/RESOURCE/NAME` (cluster-scoped); resources of a non-core group that upstream stores
//! under `GROUP/RESOURCE` pass that as `resource`. Lists read the prefix ending in `/`.

/// The root every Kubernetes object sits under.
pub const REGISTRY_ROOT: &str = "/registry/";

/// The key of one object.
pub fn object_key(resource: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{REGISTRY_ROOT}{resource}/{ns}/{name}"),
        None => format!("{REGISTRY_ROOT}{resource}/{name}"),
    }
}

/// The prefix for listing a resource, across namespaces (`None`) or in one.
pub fn list_prefix(resource: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("{REGISTRY_ROOT}{resource}/{ns}/"),
        None => format!("{REGISTRY_ROOT}{resource}/"),
    }
}

/// The smallest byte string greater than every string with `prefix` (etcd's `range_end`);
/// empty when no such string exists (the prefix is all 0xff), meaning "to the end".
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

/// The key right after `key` in byte order: where the next page of a list starts.
pub fn key_after(key: &str) -> String {
    format!("{key}\u{1}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_upstream() {
        assert_eq!(
            object_key("pods", Some("default"), "web-0"),
            "/registry/pods/default/web-0"
        );
        assert_eq!(object_key("nodes", None, "n1"), "/registry/nodes/n1");
        assert_eq!(
            list_prefix("pods", Some("kube-system")),
            "/registry/pods/kube-system/"
        );
        assert_eq!(list_prefix("pods", None), "/registry/pods/");
    }

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end(b"/registry/pods/"), b"/registry/pods0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), Vec::<u8>::new());
    }

    #[test]
    fn key_after_sorts_between_key_and_its_children() {
        let k = "/registry/pods/ns/a";
        assert!(key_after(k).as_str() > k);
        assert!(key_after(k).as_str() < "/registry/pods/ns/a-b");
    }
}
