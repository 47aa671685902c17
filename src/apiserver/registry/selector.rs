//! Label and field selectors, pure: parsing and matching as upstream's `labels.Parse` and
//! `fields.ParseSelector`.

use serde_json::Value;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A conjunction of requirements; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector(pub Vec<Requirement>);

/// A selector that cannot be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unable to parse requirement: {0}")]
pub struct SelectorError(pub String);

/// Splits on commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn set_values(rest: &str, whole: &str) -> Result<Vec<String>, SelectorError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError(whole.to_string()))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

/// Whether a LabelSelector object (matchLabels and matchExpressions) selects `labels`.
pub fn label_selector_matches(selector: &Value, labels: &Value) -> bool {
    Selector::parse_labels(&selector_string(selector))
        .is_ok_and(|s| s.matches_labels(&serde_json::json!({"metadata": {"labels": labels}})))
}

impl Selector {
    /// Parses a label selector (`a=b,c!=d,e in (f,g),h,!i`).
    pub fn parse_labels(s: &str) -> Result<Selector, SelectorError> {
        let mut reqs = Vec::new();
        for part in split_top(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let req = if let Some(key) = part.strip_prefix('!') {
                Requirement::DoesNotExist(key.trim().to_string())
            } else if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = part.split_once("==") {
                Requirement::Equals(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement::Equals(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                Requirement::NotIn(k.trim().to_string(), set_values(rest, part)?)
            } else if let Some((k, rest)) = part.split_once(" in ") {
                Requirement::In(k.trim().to_string(), set_values(rest, part)?)
            } else if part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            {
                Requirement::Exists(part.to_string())
            } else {
                // `key word`: an operator was expected after the key, as upstream words it.
                let mut words = part.split_whitespace();
                return Err(SelectorError(match (words.next(), words.next()) {
                    (Some(_), Some(found)) => {
                        format!("found '{found}', expected: '=', '!=', '==', 'in', notin'")
                    }
                    _ => part.to_string(),
                }));
            };
            reqs.push(req);
        }
        Ok(Selector(reqs))
    }

    /// Whether the selector has no requirements (selects everything).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The keys the selector names.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|r| match r {
            Requirement::Equals(k, _)
            | Requirement::NotEquals(k, _)
            | Requirement::In(k, _)
            | Requirement::NotIn(k, _)
            | Requirement::Exists(k)
            | Requirement::DoesNotExist(k) => k.as_str(),
        })
    }

    /// Parses a field selector (`metadata.name=x,status.phase!=Running`).
    pub fn parse_fields(s: &str) -> Result<Selector, SelectorError> {
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.to_string(), v.to_string())
            } else if let Some((k, v)) = part.split_once("==") {
                Requirement::Equals(k.to_string(), v.to_string())
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement::Equals(k.to_string(), v.to_string())
            } else {
                return Err(SelectorError(part.to_string()));
            };
            reqs.push(req);
        }
        Ok(Selector(reqs))
    }

    /// Whether `lookup` (key -> value) satisfies every requirement.
    pub fn matches(&self, lookup: impl Fn(&str) -> Option<String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => lookup(k).as_deref() == Some(v.as_str()),
            Requirement::NotEquals(k, v) => lookup(k).as_deref() != Some(v.as_str()),
            Requirement::In(k, vs) => lookup(k).is_some_and(|x| vs.contains(&x)),
            Requirement::NotIn(k, vs) => !lookup(k).is_some_and(|x| vs.contains(&x)),
            Requirement::Exists(k) => lookup(k).is_some(),
            Requirement::DoesNotExist(k) => lookup(k).is_none(),
        })
    }

    /// Whether the object's labels satisfy the selector.
    pub fn matches_labels(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        self.matches(|k| labels.get(k).and_then(Value::as_str).map(str::to_string))
    }

    /// Whether the object's fields satisfy the selector (dotted paths into the object); an
    /// unset field has the value `unset` gives it (upstream's field sets hold Go zero values).
    pub fn matches_fields(&self, obj: &Value, unset: impl Fn(&str) -> &'static str) -> bool {
        self.matches(|k| {
            let mut cur = obj;
            for part in k.split('.') {
                match cur.get(part) {
                    Some(v) => cur = v,
                    None => return Some(unset(k).to_string()),
                }
            }
            Some(match cur {
                Value::String(s) => s.clone(),
                Value::Null => unset(k).to_string(),
                other => other.to_string(),
            })
        })
    }
}

/// A label selector as the text `kubectl` and Scale's status show.
pub fn selector_string(sel: &Value) -> String {
    let mut parts: Vec<String> = Vec::new();
    let labels = if sel.get("matchLabels").is_some() || sel.get("matchExpressions").is_some() {
        &sel["matchLabels"]
    } else {
        sel
    };
    for (k, v) in labels.as_object().into_iter().flatten() {
        parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
    }
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match e["operator"].as_str() {
            Some("In") => format!("{key} in ({})", values.join(",")),
            Some("NotIn") => format!("{key} notin ({})", values.join(",")),
            Some("Exists") => key.to_string(),
            Some("DoesNotExist") => format!("!{key}"),
            _ => continue,
        });
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors_parse_and_match() {
        let s = Selector::parse_labels("app=web,tier in (front, back),!legacy,env!=prod,team")
            .expect("parse");
        let yes = json!({"metadata": {"labels": {"app": "web", "tier": "front", "team": "a"}}});
        let no = json!({"metadata": {"labels": {"app": "web", "tier": "db", "team": "a"}}});
        assert!(s.matches_labels(&yes));
        assert!(!s.matches_labels(&no));
        assert!(Selector::parse_labels("a in b").is_err());
        assert!(Selector::default().matches_labels(&json!({})));
    }

    #[test]
    fn selectors_print_like_kubectl() {
        let sel = json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]});
        assert_eq!(selector_string(&sel), "app=web,tier in (a,b)");
        assert_eq!(selector_string(&json!({"app": "rc"})), "app=rc");
    }

    #[test]
    fn field_selectors_follow_paths() {
        let s = Selector::parse_fields("metadata.name=a,status.phase!=Running").expect("parse");
        assert!(s.matches_fields(
            &json!({"metadata": {"name": "a"}, "status": {"phase": "Pending"}}),
            |_| ""
        ));
        assert!(!s.matches_fields(
            &json!({"metadata": {"name": "a"}, "status": {"phase": "Running"}}),
            |_| ""
        ));
    }
}
