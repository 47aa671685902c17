//! Priority: a pod's `priorityClassName` becomes its `priority` and `preemptionPolicy` (the
//! global default class, or 0, when it names none), and only one PriorityClass may be the
//! global default.

use axum::response::Response;
use serde_json::{json, Value};

use super::{list, lookup, Attributes, Operation};

const GROUP: &str = "scheduling.k8s.io";

/// Resolves a pod's priority on create and keeps it on update; refuses a second global default.
pub async fn admit(
    a: &Attributes<'_>,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<(), Response> {
    if a.is(GROUP, "priorityclasses") && obj["globalDefault"] == true {
        for other in list(a.reg, GROUP, "priorityclasses", None).await {
            let name = other["metadata"]["name"].as_str().unwrap_or_default();
            if other["globalDefault"] == true && name != a.name {
                return Err(a.forbidden(&format!(
                    "PriorityClass {name} is already marked as default. Only one default can exist"
                )));
            }
        }
        return Ok(());
    }
    if !a.is("", "pods") {
        return Ok(());
    }
    if a.op == Operation::Update {
        if let Some(old) = old {
            for f in ["priority", "preemptionPolicy"] {
                if !old["spec"][f].is_null() {
                    obj["spec"][f] = old["spec"][f].clone();
                }
            }
        }
        return Ok(());
    }
    let class_name = obj["spec"]["priorityClassName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (value, policy) = if class_name.is_empty() {
        let default = list(a.reg, GROUP, "priorityclasses", None)
            .await
            .into_iter()
            .find(|c| c["globalDefault"] == true);
        match default {
            Some(c) => {
                obj["spec"]["priorityClassName"] = c["metadata"]["name"].clone();
                (
                    c["value"].as_i64().unwrap_or(0),
                    c["preemptionPolicy"].as_str().map(str::to_string),
                )
            }
            None => (0, None),
        }
    } else {
        match lookup(a.reg, GROUP, "priorityclasses", None, &class_name).await {
            Some(c) => (
                c["value"].as_i64().unwrap_or(0),
                c["preemptionPolicy"].as_str().map(str::to_string),
            ),
            None => {
                return Err(a.forbidden(&format!(
                    "no PriorityClass with name {class_name} was found"
                )))
            }
        }
    };
    if let Some(given) = obj["spec"]["priority"].as_i64() {
        if given != value {
            return Err(a.forbidden(&format!("the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name")));
        }
    }
    let policy = policy.unwrap_or_else(|| "PreemptLowerPriority".to_string());
    if let Some(given) = obj["spec"]["preemptionPolicy"].as_str() {
        if given != policy {
            return Err(a.forbidden(&format!("the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name")));
        }
    }
    obj["spec"]["priority"] = json!(value);
    obj["spec"]["preemptionPolicy"] = json!(policy);
    Ok(())
}
