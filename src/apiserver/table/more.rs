//! Columns of the kinds beyond the everyday ones in `mod.rs`: nodes, daemon sets, jobs, cron
//! jobs, replication controllers, volumes and claims, endpoints and slices, ingresses, HPAs,
//! disruption budgets, storage and ingress classes, bindings, priority classes, network
//! policies, quotas, pod templates and controller revisions, as upstream's printers show them.

use serde_json::{json, Value};

use super::{age, age_of, col, count, name, none_if_empty, selector_text, str_or, Column};
use crate::apiserver::catalog::ResourceDef;

fn name_col() -> Column {
    Column {
        name: "Name",
        kind: "string",
        format: "name",
        priority: 0,
        cell: name,
    }
}

fn join(v: &Value, f: impl Fn(&Value) -> Option<String>) -> String {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(f)
        .collect::<Vec<_>>()
        .join(",")
}

/// A NodeMetrics' usage, or a PodMetrics' summed over its containers (values in `unit`).
fn usage(o: &Value, resource: &str, unit: &str) -> Value {
    let value = |v: &Value| {
        v.as_str()
            .and_then(|q| q.strip_suffix(unit))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let total: u64 = match o["containers"].as_array() {
        Some(cs) => cs.iter().map(|c| value(&c["usage"][resource])).sum(),
        None => value(&o["usage"][resource]),
    };
    json!(format!("{total}{unit}"))
}

fn int(v: &Value) -> Value {
    json!(v.as_i64().unwrap_or(0))
}

/// Container names or images of the pod template at `pointer`.
fn template_containers(o: &Value, pointer: &str, field: &str) -> Value {
    let list = o
        .pointer(&format!("{pointer}/containers"))
        .cloned()
        .unwrap_or(Value::Null);
    json!(join(&list, |c| c[field].as_str().map(str::to_string)))
}

fn map_labels(v: &Value) -> Value {
    let mut pairs: Vec<String> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    pairs.sort();
    none_if_empty(pairs.join(","))
}

fn access_modes(v: &Value) -> Value {
    json!(join(v, |m| Some(
        match m.as_str().unwrap_or_default() {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        }
        .to_string()
    )))
}

/// Up to three addresses, then how many more, as upstream's endpoint printers do.
fn first_three(items: Vec<String>) -> Value {
    match items.len() {
        0 => json!("<none>"),
        n if n > 3 => json!(format!("{} + {} more...", items[..3].join(","), n - 3)),
        _ => json!(items.join(",")),
    }
}

/// `-o wide` Containers and Images of a workload's pod template.
fn workload_wide(cols: &mut Vec<Column>) {
    cols.push(col("Containers", "string", 1, |o, _| {
        template_containers(o, "/spec/template/spec", "name")
    }));
    cols.push(col("Images", "string", 1, |o, _| {
        template_containers(o, "/spec/template/spec", "image")
    }));
}

fn condition<'a>(o: &'a Value, ty: &str) -> Option<&'a Value> {
    o["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
}

fn node_status(o: &Value, _: i64) -> Value {
    let mut s = match condition(o, "Ready").and_then(|c| c["status"].as_str()) {
        Some("True") => "Ready".to_string(),
        Some("False") => "NotReady".to_string(),
        _ => "Unknown".to_string(),
    };
    if o["spec"]["unschedulable"] == true {
        s.push_str(",SchedulingDisabled");
    }
    json!(s)
}

fn node_roles(o: &Value, _: i64) -> Value {
    let mut roles: Vec<String> = o["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            if let Some(r) = k.strip_prefix("node-role.kubernetes.io/") {
                (!r.is_empty()).then(|| r.to_string())
            } else if k == "kubernetes.io/role" {
                v.as_str().map(str::to_string)
            } else {
                None
            }
        })
        .collect();
    roles.sort();
    roles.dedup();
    none_if_empty(roles.join(","))
}

fn node_address(o: &Value, ty: &str) -> Value {
    o["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == ty)
        .map_or(json!("<none>"), |a| a["address"].clone())
}

fn job_status(o: &Value, _: i64) -> Value {
    let is = |t: &str| condition(o, t).is_some_and(|c| c["status"] == "True");
    json!(if is("Complete") {
        "Complete"
    } else if is("Failed") {
        "Failed"
    } else if o["metadata"]["deletionTimestamp"].is_string() {
        "Terminating"
    } else if is("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else if is("FailureTarget") {
        "FailureTarget"
    } else if is("Suspended") {
        "Suspended"
    } else {
        "Running"
    })
}

fn job_completions(o: &Value, _: i64) -> Value {
    let succeeded = o["status"]["succeeded"].as_i64().unwrap_or(0);
    match o["spec"]["completions"].as_i64() {
        Some(c) => json!(format!("{succeeded}/{c}")),
        None => match o["spec"]["parallelism"].as_i64().unwrap_or(0) {
            p if p > 1 => json!(format!("{succeeded}/1 of {p}")),
            _ => json!(format!("{succeeded}/1")),
        },
    }
}

fn job_duration(o: &Value, now: i64) -> Value {
    let start = &o["status"]["startTime"];
    if !start.is_string() {
        return json!("");
    }
    let Some(s) = start.as_str().and_then(super::parse_time) else {
        return json!("");
    };
    let end = o["status"]["completionTime"]
        .as_str()
        .and_then(super::parse_time)
        .unwrap_or(now);
    json!(super::human_duration(end - s))
}

/// An HPA's targets: `cpu: 40%/70%`, `<unknown>` for a current value not measured yet.
fn hpa_targets(o: &Value, _: i64) -> Value {
    if let Some(t) = o["spec"]["targetCPUUtilizationPercentage"].as_i64() {
        let cur = o["status"]["currentCPUUtilizationPercentage"]
            .as_i64()
            .map_or("<unknown>".to_string(), |c| format!("{c}%"));
        return json!(format!("cpu: {cur}/{t}%"));
    }
    let current = o["status"]["currentMetrics"].as_array();
    let parts: Vec<String> = o["spec"]["metrics"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let ty = m["type"].as_str().unwrap_or_default();
            let key = match ty {
                "Resource" => "resource",
                "ContainerResource" => "containerResource",
                "Pods" => "pods",
                "Object" => "object",
                _ => "external",
            };
            let spec = &m[key];
            let metric = spec["name"]
                .as_str()
                .or(spec["metric"]["name"].as_str())
                .unwrap_or("<unknown>");
            let target = &spec["target"];
            let cur = current
                .into_iter()
                .flatten()
                .find(|c| c["type"] == ty && c[key]["name"] == spec["name"])
                .map(|c| &c[key]["current"]);
            let (want, have) = if let Some(u) = target["averageUtilization"].as_i64() {
                (
                    format!("{u}%"),
                    cur.and_then(|c| c["averageUtilization"].as_i64())
                        .map(|c| format!("{c}%")),
                )
            } else if let Some(v) = target["averageValue"].as_str() {
                (
                    v.to_string(),
                    cur.and_then(|c| c["averageValue"].as_str())
                        .map(str::to_string),
                )
            } else {
                (
                    target["value"].as_str().unwrap_or_default().to_string(),
                    cur.and_then(|c| c["value"].as_str()).map(str::to_string),
                )
            };
            let have = have.unwrap_or_else(|| "<unknown>".into());
            if ty == "Resource" || ty == "ContainerResource" {
                format!("{metric}: {have}/{want}")
            } else {
                format!("{have}/{want}")
            }
        })
        .collect();
    none_if_empty(parts.join(", "))
}

fn subjects(o: &Value, kind: &'static str) -> Value {
    none_if_empty(join(&o["subjects"], |s| {
        (s["kind"] == kind).then(|| match (kind, s["namespace"].as_str()) {
            ("ServiceAccount", Some(ns)) => {
                format!("{ns}/{}", s["name"].as_str().unwrap_or_default())
            }
            _ => s["name"].as_str().unwrap_or_default().to_string(),
        })
    }))
}

fn quota(o: &Value, limits: bool) -> Value {
    let hard = o["status"]["hard"]
        .as_object()
        .or(o["spec"]["hard"].as_object())
        .cloned()
        .unwrap_or_default();
    let mut keys: Vec<&String> = hard
        .keys()
        .filter(|k| k.starts_with("limits.") == limits)
        .collect();
    keys.sort();
    json!(keys
        .iter()
        .map(|k| format!(
            "{k}: {}/{}",
            o["status"]["used"][k.as_str()].as_str().unwrap_or("0"),
            hard[k.as_str()].as_str().unwrap_or_default()
        ))
        .collect::<Vec<_>>()
        .join(", "))
}

/// The columns of `def`, if it is one of the kinds here.
pub(super) fn columns(def: &ResourceDef) -> Option<Vec<Column>> {
    let age_col = || col("Age", "string", 0, age);
    let mut cols = vec![name_col()];
    match (def.group, def.plural) {
        // As metrics-server prints them: the usage (a pod's summed over its containers).
        ("metrics.k8s.io", _) => {
            cols.push(col("cpu", "string", 0, |o, _| usage(o, "cpu", "n")));
            cols.push(col("memory", "string", 0, |o, _| usage(o, "memory", "Ki")));
            cols.push(col("Window", "string", 0, |o, _| str_or(&o["window"], "")));
        }
        ("", "nodes") => {
            cols.push(col("Status", "string", 0, node_status));
            cols.push(col("Roles", "string", 0, node_roles));
            cols.push(age_col());
            cols.push(col("Version", "string", 0, |o, _| {
                str_or(&o["status"]["nodeInfo"]["kubeletVersion"], "")
            }));
            cols.push(col("Internal-IP", "string", 1, |o, _| {
                node_address(o, "InternalIP")
            }));
            cols.push(col("External-IP", "string", 1, |o, _| {
                node_address(o, "ExternalIP")
            }));
            for (title, field) in [
                ("OS-Image", "osImage"),
                ("Kernel-Version", "kernelVersion"),
                ("Container-Runtime", "containerRuntimeVersion"),
            ] {
                let cell: fn(&Value, i64) -> Value = match field {
                    "osImage" => |o, _| unknown(&o["status"]["nodeInfo"]["osImage"]),
                    "kernelVersion" => |o, _| unknown(&o["status"]["nodeInfo"]["kernelVersion"]),
                    _ => |o, _| unknown(&o["status"]["nodeInfo"]["containerRuntimeVersion"]),
                };
                cols.push(col(title, "string", 1, cell));
            }
        }
        ("apps", "daemonsets") => {
            for (title, field) in [
                ("Desired", "desiredNumberScheduled"),
                ("Current", "currentNumberScheduled"),
                ("Ready", "numberReady"),
                ("Up-to-date", "updatedNumberScheduled"),
                ("Available", "numberAvailable"),
            ] {
                let cell: fn(&Value, i64) -> Value = match field {
                    "desiredNumberScheduled" => |o, _| int(&o["status"]["desiredNumberScheduled"]),
                    "currentNumberScheduled" => |o, _| int(&o["status"]["currentNumberScheduled"]),
                    "numberReady" => |o, _| int(&o["status"]["numberReady"]),
                    "updatedNumberScheduled" => |o, _| int(&o["status"]["updatedNumberScheduled"]),
                    _ => |o, _| int(&o["status"]["numberAvailable"]),
                };
                cols.push(col(title, "integer", 0, cell));
            }
            cols.push(col("Node Selector", "string", 0, |o, _| {
                map_labels(&o["spec"]["template"]["spec"]["nodeSelector"])
            }));
            cols.push(age_col());
            workload_wide(&mut cols);
            cols.push(col("Selector", "string", 1, |o, _| {
                selector_text(&o["spec"]["selector"])
            }));
        }
        ("", "replicationcontrollers") => {
            cols.push(col("Desired", "integer", 0, |o, _| {
                json!(o["spec"]["replicas"].as_i64().unwrap_or(1))
            }));
            cols.push(col("Current", "integer", 0, |o, _| {
                int(&o["status"]["replicas"])
            }));
            cols.push(col("Ready", "integer", 0, |o, _| {
                int(&o["status"]["readyReplicas"])
            }));
            cols.push(age_col());
            workload_wide(&mut cols);
            cols.push(col("Selector", "string", 1, |o, _| {
                map_labels(&o["spec"]["selector"])
            }));
        }
        ("batch", "jobs") => {
            cols.push(col("Status", "string", 0, job_status));
            cols.push(col("Completions", "string", 0, job_completions));
            cols.push(col("Duration", "string", 0, job_duration));
            cols.push(age_col());
            workload_wide(&mut cols);
            cols.push(col("Selector", "string", 1, |o, _| {
                selector_text(&o["spec"]["selector"])
            }));
        }
        ("batch", "cronjobs") => {
            cols.push(col("Schedule", "string", 0, |o, _| {
                str_or(&o["spec"]["schedule"], "")
            }));
            cols.push(col("Timezone", "string", 0, |o, _| {
                str_or(&o["spec"]["timeZone"], "<none>")
            }));
            cols.push(col("Suspend", "boolean", 0, |o, _| {
                json!(if o["spec"]["suspend"] == true {
                    "True"
                } else {
                    "False"
                })
            }));
            cols.push(col("Active", "integer", 0, |o, _| {
                json!(count(&o["status"]["active"]))
            }));
            cols.push(col("Last Schedule", "string", 0, |o, now| {
                if o["status"]["lastScheduleTime"].is_string() {
                    age_of(&o["status"]["lastScheduleTime"], now)
                } else {
                    json!("<none>")
                }
            }));
            cols.push(age_col());
            cols.push(col("Containers", "string", 1, |o, _| {
                template_containers(o, "/spec/jobTemplate/spec/template/spec", "name")
            }));
            cols.push(col("Images", "string", 1, |o, _| {
                template_containers(o, "/spec/jobTemplate/spec/template/spec", "image")
            }));
            cols.push(col("Selector", "string", 1, |o, _| {
                selector_text(&o["spec"]["jobTemplate"]["spec"]["selector"])
            }));
        }
        ("", "persistentvolumes") => {
            cols.push(col("Capacity", "string", 0, |o, _| {
                str_or(&o["spec"]["capacity"]["storage"], "")
            }));
            cols.push(col("Access Modes", "string", 0, |o, _| {
                access_modes(&o["spec"]["accessModes"])
            }));
            cols.push(col("Reclaim Policy", "string", 0, |o, _| {
                str_or(&o["spec"]["persistentVolumeReclaimPolicy"], "")
            }));
            cols.push(col("Status", "string", 0, |o, _| {
                str_or(&o["status"]["phase"], "")
            }));
            cols.push(col("Claim", "string", 0, |o, _| {
                let c = &o["spec"]["claimRef"];
                json!(match (c["namespace"].as_str(), c["name"].as_str()) {
                    (Some(ns), Some(n)) => format!("{ns}/{n}"),
                    _ => String::new(),
                })
            }));
            cols.push(col("StorageClass", "string", 0, |o, _| {
                str_or(&o["spec"]["storageClassName"], "")
            }));
            cols.push(col("VolumeAttributesClass", "string", 0, |o, _| {
                str_or(&o["spec"]["volumeAttributesClassName"], "<unset>")
            }));
            cols.push(col("Reason", "string", 0, |o, _| {
                str_or(&o["status"]["reason"], "")
            }));
            cols.push(age_col());
            cols.push(col("VolumeMode", "string", 1, |o, _| {
                str_or(&o["spec"]["volumeMode"], "Filesystem")
            }));
        }
        ("", "persistentvolumeclaims") => {
            cols.push(col("Status", "string", 0, |o, _| {
                str_or(&o["status"]["phase"], "")
            }));
            cols.push(col("Volume", "string", 0, |o, _| {
                str_or(&o["spec"]["volumeName"], "")
            }));
            cols.push(col("Capacity", "string", 0, |o, _| {
                str_or(&o["status"]["capacity"]["storage"], "")
            }));
            cols.push(col("Access Modes", "string", 0, |o, _| {
                access_modes(&o["status"]["accessModes"])
            }));
            cols.push(col("StorageClass", "string", 0, |o, _| {
                str_or(&o["spec"]["storageClassName"], "")
            }));
            cols.push(col("VolumeAttributesClass", "string", 0, |o, _| {
                str_or(&o["spec"]["volumeAttributesClassName"], "<unset>")
            }));
            cols.push(age_col());
            cols.push(col("VolumeMode", "string", 1, |o, _| {
                str_or(&o["spec"]["volumeMode"], "Filesystem")
            }));
        }
        ("", "endpoints") => {
            cols.push(col("Endpoints", "string", 0, |o, _| {
                let mut out = Vec::new();
                for subset in o["subsets"].as_array().into_iter().flatten() {
                    let ports: Vec<i64> = subset["ports"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|p| p["port"].as_i64())
                        .collect();
                    for a in subset["addresses"].as_array().into_iter().flatten() {
                        let ip = a["ip"].as_str().unwrap_or_default();
                        if ports.is_empty() {
                            out.push(ip.to_string());
                        }
                        out.extend(ports.iter().map(|p| format!("{ip}:{p}")));
                    }
                }
                first_three(out)
            }));
            cols.push(age_col());
        }
        ("discovery.k8s.io", "endpointslices") => {
            cols.push(col("AddressType", "string", 0, |o, _| {
                str_or(&o["addressType"], "")
            }));
            cols.push(col("Ports", "string", 0, |o, _| {
                let p = join(&o["ports"], |p| p["port"].as_i64().map(|n| n.to_string()));
                json!(if p.is_empty() {
                    "<unset>".to_string()
                } else {
                    p
                })
            }));
            cols.push(col("Endpoints", "string", 0, |o, _| {
                let addrs: Vec<String> = o["endpoints"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
                    .filter_map(|a| a.as_str().map(str::to_string))
                    .collect();
                first_three(addrs)
            }));
            cols.push(age_col());
        }
        ("networking.k8s.io", "ingresses") => {
            cols.push(col("Class", "string", 0, |o, _| {
                str_or(&o["spec"]["ingressClassName"], "<none>")
            }));
            cols.push(col("Hosts", "string", 0, |o, _| {
                let hosts = join(&o["spec"]["rules"], |r| {
                    Some(r["host"].as_str().unwrap_or("*").to_string())
                });
                json!(if hosts.is_empty() {
                    "*".to_string()
                } else {
                    hosts
                })
            }));
            cols.push(col("Address", "string", 0, |o, _| {
                json!(join(&o["status"]["loadBalancer"]["ingress"], |i| i["ip"]
                    .as_str()
                    .or(i["hostname"].as_str())
                    .map(str::to_string)))
            }));
            cols.push(col("Ports", "string", 0, |o, _| {
                json!(if count(&o["spec"]["tls"]) > 0 {
                    "80, 443"
                } else {
                    "80"
                })
            }));
            cols.push(age_col());
        }
        ("networking.k8s.io", "ingressclasses") => {
            cols.push(col("Controller", "string", 0, |o, _| {
                str_or(&o["spec"]["controller"], "")
            }));
            cols.push(col("Parameters", "string", 0, |o, _| {
                let p = &o["spec"]["parameters"];
                match p["kind"].as_str() {
                    Some(kind) => {
                        json!(format!("{kind}/{}", p["name"].as_str().unwrap_or_default()))
                    }
                    None => json!("<none>"),
                }
            }));
            cols.push(age_col());
        }
        ("networking.k8s.io", "networkpolicies") => {
            cols.push(col("Pod-Selector", "string", 0, |o, _| {
                selector_text(&o["spec"]["podSelector"])
            }));
            cols.push(age_col());
        }
        ("autoscaling", "horizontalpodautoscalers") => {
            cols.push(col("Reference", "string", 0, |o, _| {
                let r = &o["spec"]["scaleTargetRef"];
                json!(format!(
                    "{}/{}",
                    r["kind"].as_str().unwrap_or_default(),
                    r["name"].as_str().unwrap_or_default()
                ))
            }));
            cols.push(col("Targets", "string", 0, hpa_targets));
            cols.push(col("MinPods", "string", 0, |o, _| {
                match o["spec"]["minReplicas"].as_i64() {
                    Some(n) => json!(n.to_string()),
                    None => json!("<unset>"),
                }
            }));
            cols.push(col("MaxPods", "integer", 0, |o, _| {
                int(&o["spec"]["maxReplicas"])
            }));
            cols.push(col("Replicas", "integer", 0, |o, _| {
                int(&o["status"]["currentReplicas"])
            }));
            cols.push(age_col());
        }
        ("policy", "poddisruptionbudgets") => {
            cols.push(col("Min Available", "string", 0, |o, _| {
                na(&o["spec"]["minAvailable"])
            }));
            cols.push(col("Max Unavailable", "string", 0, |o, _| {
                na(&o["spec"]["maxUnavailable"])
            }));
            cols.push(col("Allowed Disruptions", "integer", 0, |o, _| {
                int(&o["status"]["disruptionsAllowed"])
            }));
            cols.push(age_col());
        }
        ("storage.k8s.io", "storageclasses") => {
            cols[0].cell = |o, _| {
                let n = o["metadata"]["name"].as_str().unwrap_or_default();
                let default = o["metadata"]["annotations"]
                    ["storageclass.kubernetes.io/is-default-class"]
                    == "true";
                json!(if default {
                    format!("{n} (default)")
                } else {
                    n.to_string()
                })
            };
            cols.push(col("Provisioner", "string", 0, |o, _| {
                str_or(&o["provisioner"], "")
            }));
            cols.push(col("ReclaimPolicy", "string", 0, |o, _| {
                str_or(&o["reclaimPolicy"], "Delete")
            }));
            cols.push(col("VolumeBindingMode", "string", 0, |o, _| {
                str_or(&o["volumeBindingMode"], "Immediate")
            }));
            cols.push(col("AllowVolumeExpansion", "string", 0, |o, _| {
                json!((o["allowVolumeExpansion"] == true).to_string())
            }));
            cols.push(age_col());
        }
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => {
            cols.push(col("Role", "string", 0, |o, _| {
                json!(format!(
                    "{}/{}",
                    o["roleRef"]["kind"].as_str().unwrap_or_default(),
                    o["roleRef"]["name"].as_str().unwrap_or_default()
                ))
            }));
            cols.push(age_col());
            cols.push(col("Users", "string", 1, |o, _| subjects(o, "User")));
            cols.push(col("Groups", "string", 1, |o, _| subjects(o, "Group")));
            cols.push(col("ServiceAccounts", "string", 1, |o, _| {
                subjects(o, "ServiceAccount")
            }));
        }
        ("scheduling.k8s.io", "priorityclasses") => {
            cols.push(col("Value", "integer", 0, |o, _| int(&o["value"])));
            cols.push(col("Global-Default", "boolean", 0, |o, _| {
                json!(o["globalDefault"] == true)
            }));
            cols.push(age_col());
            cols.push(col("PreemptionPolicy", "string", 0, |o, _| {
                str_or(&o["preemptionPolicy"], "PreemptLowerPriority")
            }));
        }
        ("", "resourcequotas") => {
            cols.push(age_col());
            cols.push(col("Request", "string", 0, |o, _| quota(o, false)));
            cols.push(col("Limit", "string", 0, |o, _| quota(o, true)));
        }
        ("", "podtemplates") => {
            cols.push(col("Containers", "string", 0, |o, _| {
                template_containers(o, "/template/spec", "name")
            }));
            cols.push(col("Images", "string", 0, |o, _| {
                template_containers(o, "/template/spec", "image")
            }));
            cols.push(col("Pod Labels", "string", 0, |o, _| {
                map_labels(&o["template"]["metadata"]["labels"])
            }));
        }
        ("apps", "controllerrevisions") => {
            cols.push(col("Controller", "string", 0, |o, _| {
                let owner = o["metadata"]["ownerReferences"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|r| r["controller"] == true);
                match owner {
                    Some(r) => {
                        let api = r["apiVersion"].as_str().unwrap_or_default();
                        let group = api.rsplit_once('/').map_or("", |(g, _)| g);
                        let kind = r["kind"].as_str().unwrap_or_default().to_lowercase();
                        let name = r["name"].as_str().unwrap_or_default();
                        json!(if group.is_empty() {
                            format!("{kind}/{name}")
                        } else {
                            format!("{kind}.{group}/{name}")
                        })
                    }
                    None => json!("<none>"),
                }
            }));
            cols.push(col("Revision", "integer", 0, |o, _| int(&o["revision"])));
            cols.push(age_col());
        }
        _ => return None,
    }
    Some(cols)
}

fn unknown(v: &Value) -> Value {
    match v.as_str() {
        Some(s) if !s.is_empty() => json!(s),
        _ => json!("<unknown>"),
    }
}

/// An int-or-string budget, `N/A` when unset.
fn na(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.to_string()),
        Value::String(s) => json!(s),
        _ => json!("N/A"),
    }
}
