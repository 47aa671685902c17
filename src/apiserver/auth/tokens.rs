//! Bearer tokens besides service-account JWTs: the static token file (`--token-auth-file`,
//! upstream's CSV: `token,user,uid[,"group1,group2"]`) and bootstrap tokens
//! (`ID.SECRET`, stored as `bootstrap.kubernetes.io/token` Secrets named `bootstrap-token-ID` in
//! kube-system, with expiry and usages), as kube-apiserver's `--enable-bootstrap-token-auth`.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use crate::apiserver::catalog;
use crate::apiserver::http::User;
use crate::apiserver::registry::object;
use crate::store::Store;

/// Why the static token file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("reading the token file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("token file {path:?}, line {line}: must have at least 3 columns (token, user name, user uid), found {found}")]
    Columns {
        path: String,
        line: usize,
        found: usize,
    },
}

/// Splits one CSV record, honouring double quotes (`""` is a quote inside a quoted field).
fn csv_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Reads a static token file into token -> user.
pub fn load_token_file(path: &Path) -> Result<HashMap<String, User>, TokenFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
        path: shown.clone(),
        source,
    })?;
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let f = csv_fields(line);
        if f.len() < 3 {
            return Err(TokenFileError::Columns {
                path: shown,
                line: i + 1,
                found: f.len(),
            });
        }
        let token = f[0].trim().to_string();
        if token.is_empty() {
            tracing::warn!(line = i + 1, "token file: empty token skipped");
            continue;
        }
        let mut groups: Vec<String> = f
            .get(3)
            .map(|g| {
                g.split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        groups.push("system:authenticated".into());
        if out
            .insert(
                token,
                User {
                    name: f[1].trim().to_string(),
                    groups,
                },
            )
            .is_some()
        {
            tracing::warn!(
                line = i + 1,
                "token file: duplicate token, the last one wins"
            );
        }
    }
    Ok(out)
}

/// Whether two secrets are equal, in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// `ID.SECRET` with upstream's shape (6 and 16 characters of `[a-z0-9]`).
pub fn parse_bootstrap_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

fn data_field(secret: &Value, key: &str) -> Option<String> {
    use base64::Engine;
    let b64 = secret["data"][key].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(bytes).ok()
}

/// The user a bootstrap token stands for, if its Secret exists, matches, allows
/// authentication and has not expired.
pub async fn authenticate_bootstrap(store: &dyn Store, token: &str, now: i64) -> Option<User> {
    let (id, secret_part) = parse_bootstrap_token(token)?;
    let def = catalog::find("", "v1", "secrets")?;
    let name = format!("bootstrap-token-{id}");
    let kv = store
        .get(&object::key(def, Some("kube-system"), &name), 0)
        .await
        .ok()??;
    let secret: Value = serde_json::from_slice(&kv.value).ok()?;
    if secret["type"] != "bootstrap.kubernetes.io/token"
        || secret["metadata"]["deletionTimestamp"].is_string()
    {
        return None;
    }
    if data_field(&secret, "token-id")? != id
        || !same(&data_field(&secret, "token-secret")?, secret_part)
    {
        return None;
    }
    if data_field(&secret, "usage-bootstrap-authentication").as_deref() != Some("true") {
        return None;
    }
    if let Some(exp) = data_field(&secret, "expiration") {
        let t = time::OffsetDateTime::parse(&exp, &time::format_description::well_known::Rfc3339)
            .ok()?;
        if t.unix_timestamp() <= now {
            return None;
        }
    }
    let mut groups = vec!["system:bootstrappers".to_string()];
    if let Some(extra) = data_field(&secret, "auth-extra-groups") {
        for g in extra.split(',').map(str::trim).filter(|g| !g.is_empty()) {
            // Only groups under system:bootstrappers may be added, as upstream.
            if !g.starts_with("system:bootstrappers:") {
                return None;
            }
            groups.push(g.to_string());
        }
    }
    groups.push("system:authenticated".into());
    Some(User {
        name: format!("system:bootstrap:{id}"),
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_file_is_upstreams_csv() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("tokens.csv");
        std::fs::write(
            &p,
            "s3cret,alice,1001,\"devs,ops\"\n\n# a comment\nother,bob,1002\n",
        )
        .expect("write");
        let t = load_token_file(&p).expect("parse");
        assert_eq!(t["s3cret"].name, "alice");
        assert_eq!(
            t["s3cret"].groups,
            vec!["devs", "ops", "system:authenticated"]
        );
        assert_eq!(t["other"].groups, vec!["system:authenticated"]);
        std::fs::write(&p, "only,two\n").expect("write");
        let e = load_token_file(&p).expect_err("short line");
        assert!(
            e.to_string()
                .contains("line 1: must have at least 3 columns"),
            "{e}"
        );
    }

    #[test]
    fn bootstrap_tokens_have_upstreams_shape() {
        assert_eq!(
            parse_bootstrap_token("abcdef.0123456789abcdef"),
            Some(("abcdef", "0123456789abcdef"))
        );
        assert!(parse_bootstrap_token("ABCDEF.0123456789abcdef").is_none());
        assert!(parse_bootstrap_token("abcdef.short").is_none());
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
