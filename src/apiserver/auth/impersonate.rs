//! Impersonation, as upstream's filter: `Impersonate-User`, `Impersonate-Group`,
//! `Impersonate-Uid` and `Impersonate-Extra-*` headers make a request act as another user, when
//! the caller may `impersonate` each of them (users, groups, serviceaccounts, uids, userextras).

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::rbac::rules::{Attributes, ResourceAttrs};
use super::{forbidden, Authenticator};
use crate::apiserver::http::User;
use crate::apiserver::status;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA: &str = "impersonate-extra-";

fn attrs(group: &str, resource: &str, sub: &str, namespace: &str, name: &str) -> Attributes {
    Attributes {
        verb: "impersonate".into(),
        resource: Some(ResourceAttrs {
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: namespace.into(),
            name: name.into(),
            ..Default::default()
        }),
        path: String::new(),
    }
}

/// Percent-decodes an extra key, as the header encoding requires.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_lowercase()
}

/// The user the request acts as: `None` when it impersonates no one, or the refusal.
pub async fn impersonated(
    auth: &Authenticator,
    caller: &User,
    headers: &HeaderMap,
) -> Result<Option<User>, Response> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    };
    let user = values(USER).into_iter().next();
    let groups = values(GROUP);
    let uid = values(UID).into_iter().next();
    let extras: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| {
            let key = k.as_str().strip_prefix(EXTRA)?;
            Some((unescape(key), v.to_str().ok()?.to_string()))
        })
        .collect();
    let Some(name) = user else {
        if groups.is_empty() && uid.is_none() && extras.is_empty() {
            return Ok(None);
        }
        return Err(status::failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "requested impersonation of groups, uid or extras without impersonating a user",
        ));
    };
    let mut checks = Vec::new();
    let sa = name
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'));
    match sa {
        Some((ns, sa_name)) => checks.push(attrs("", "serviceaccounts", "", ns, sa_name)),
        None => checks.push(attrs("", "users", "", "", &name)),
    }
    for g in &groups {
        checks.push(attrs("", "groups", "", "", g));
    }
    if let Some(u) = &uid {
        checks.push(attrs("authentication.k8s.io", "uids", "", "", u));
    }
    for (k, v) in &extras {
        checks.push(attrs("authentication.k8s.io", "userextras", k, "", v));
    }
    for a in &checks {
        if !super::decide(auth, caller, a).await.allowed {
            return Err(forbidden(&caller.name, a, ""));
        }
    }
    let mut out_groups = groups.clone();
    if groups.is_empty() {
        if let Some((ns, _)) = sa {
            out_groups = vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
            ];
        }
    }
    let unauthenticated = out_groups
        .iter()
        .any(|g| g == "system:authenticated" || g == "system:unauthenticated");
    if name != "system:anonymous" && !unauthenticated {
        out_groups.push("system:authenticated".into());
    }
    Ok(Some(User {
        name,
        groups: out_groups,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_keys_are_percent_decoded_and_lowercased() {
        assert_eq!(unescape("Scopes"), "scopes");
        assert_eq!(unescape("example.com%2fteam"), "example.com/team");
        assert_eq!(unescape("bad%zz"), "bad%zz");
    }
}
