//! Names as upstream validates them: DNS-1123 labels and subdomains, with apimachinery's
//! messages. Shared by the API server's validation and the kubelet's node name check.

/// Upstream's message for an invalid DNS-1123 subdomain or label.
pub fn name_problem(name: &str, label_only: bool) -> Option<String> {
    let max = if label_only { 63 } else { 253 };
    // A subdomain's parts have no length limit of their own, as upstream's regex.
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !p.starts_with('-')
            && !p.ends_with('-')
    };
    let ok = name.len() <= max
        && if label_only {
            part_ok(name)
        } else {
            name.split('.').all(part_ok)
        };
    if ok {
        return None;
    }
    if name.len() > max {
        return Some(format!("must be no more than {max} characters"));
    }
    Some(if label_only {
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".to_string()
    } else {
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string()
    })
}

/// Whether `name` is a lowercase RFC 1123 subdomain (a valid Node name).
pub fn is_subdomain(name: &str) -> bool {
    name_problem(name, false).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dns_1123() {
        assert!(name_problem("web-0.example", false).is_none());
        assert!(name_problem("Web", false).is_some());
        assert!(name_problem("a.b", true).is_some());
        assert!(name_problem("-a", true).is_some());
        assert!(name_problem(&"a".repeat(64), true).is_some());
        assert!(is_subdomain("edge-1.site.example"));
        // CronJob pods' names pass 63 characters in one part.
        assert!(is_subdomain(&"a".repeat(72)));
        for bad in [
            "",
            "Edge",
            "edge_1",
            "-edge",
            "edge-",
            "a..b",
            &"a".repeat(254),
        ] {
            assert!(!is_subdomain(bad), "{bad:?}");
        }
    }
}
