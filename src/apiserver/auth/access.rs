//! The access review APIs of `authorization.k8s.io/v1`: SubjectAccessReview,
//! LocalSubjectAccessReview, SelfSubjectAccessReview (`kubectl auth can-i`) and
//! SelfSubjectRulesReview (`kubectl auth can-i --list`), answered by the same authorizer that
//! guards every request.

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::rbac::rules::{Attributes, ResourceAttrs};
use super::reviews::{json, read_review};
use super::Authenticator;
use crate::apiserver::http::{Caller, User};
use crate::apiserver::status;

const GROUP_VERSION: &str = "authorization.k8s.io/v1";

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn invalid(kind: &str, field: &str, value: &Value, detail: &str) -> Response {
    let message = format!(
        "{kind}.authorization.k8s.io \"\" is invalid: {field}: Invalid value: {value}: {detail}"
    );
    status::failure_with_details(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        &message,
        json!({
            "group": "authorization.k8s.io",
            "kind": kind,
            "causes": [{"reason": "FieldValueInvalid", "message": format!("Invalid value: {value}: {detail}"), "field": field}],
        }),
    )
}

/// The attributes a review's spec asks about.
fn spec_attributes(spec: &Value) -> Attributes {
    let r = &spec["resourceAttributes"];
    if r.is_object() {
        let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
        return Attributes {
            verb: s("verb"),
            resource: Some(ResourceAttrs {
                group: s("group"),
                resource: s("resource"),
                subresource: s("subresource"),
                namespace: s("namespace"),
                name: s("name"),
                ..Default::default()
            }),
            path: String::new(),
        };
    }
    let n = &spec["nonResourceAttributes"];
    Attributes {
        verb: n["verb"].as_str().unwrap_or_default().to_string(),
        resource: None,
        path: n["path"].as_str().unwrap_or_default().to_string(),
    }
}

/// Answers a review for `user`, echoing the request with its status filled in.
async fn answer(auth: &Authenticator, mut review: Value, kind: &str, user: &User) -> Response {
    let a = spec_attributes(&review["spec"]);
    let d = super::decide(auth, user, &a).await;
    let mut st = json!({"allowed": d.allowed});
    if !d.reason.is_empty() {
        st["reason"] = json!(d.reason);
    }
    review["kind"] = json!(kind);
    review["apiVersion"] = json!(GROUP_VERSION);
    if !review["metadata"].is_object() {
        review["metadata"] = json!({});
    }
    review["metadata"]["creationTimestamp"] = Value::Null;
    review["status"] = st;
    json(StatusCode::CREATED, &review)
}

/// Checks that exactly one of resource and non-resource attributes is given.
fn check_one_of(kind: &str, spec: &Value) -> Result<(), Response> {
    let r = spec["resourceAttributes"].is_object();
    let n = spec["nonResourceAttributes"].is_object();
    if r == n {
        return Err(invalid(
            kind,
            "spec.resourceAttributes",
            &json!(if r { "both" } else { "null" }),
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        ));
    }
    Ok(())
}

/// The user a (local) subject access review asks about; one of user or groups is required.
fn spec_user(kind: &str, spec: &Value) -> Result<User, Response> {
    let user = User {
        name: spec["user"].as_str().unwrap_or_default().to_string(),
        groups: strings(&spec["groups"]),
    };
    if user.name.is_empty() && user.groups.is_empty() {
        return Err(invalid(
            kind,
            "spec.user",
            &json!(""),
            "at least one of user or group must be specified",
        ));
    }
    Ok(user)
}

fn caller(req: &Request) -> Option<User> {
    req.extensions().get::<Caller>().and_then(|c| c.0.clone())
}

/// `POST /apis/authorization.k8s.io/v1/subjectaccessreviews`.
pub async fn subject(State(auth): State<Authenticator>, req: Request) -> Response {
    let review = match read_review(req, "SubjectAccessReview").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let spec = &review["spec"];
    if let Err(r) = check_one_of("SubjectAccessReview", spec) {
        return r;
    }
    let user = match spec_user("SubjectAccessReview", spec) {
        Ok(u) => u,
        Err(r) => return r,
    };
    answer(&auth, review, "SubjectAccessReview", &user).await
}

/// `POST /apis/authorization.k8s.io/v1/namespaces/NS/localsubjectaccessreviews`.
pub async fn local_subject(
    State(auth): State<Authenticator>,
    Path(namespace): Path<String>,
    req: Request,
) -> Response {
    const KIND: &str = "LocalSubjectAccessReview";
    let mut review = match read_review(req, KIND).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let spec = &review["spec"];
    if spec["nonResourceAttributes"].is_object() {
        return invalid(
            KIND,
            "spec.nonResourceAttributes",
            &spec["nonResourceAttributes"],
            "disallowed on this kind of request",
        );
    }
    if let Err(r) = check_one_of(KIND, spec) {
        return r;
    }
    let user = match spec_user(KIND, spec) {
        Ok(u) => u,
        Err(r) => return r,
    };
    match spec["resourceAttributes"]["namespace"].as_str() {
        None | Some("") => review["spec"]["resourceAttributes"]["namespace"] = json!(namespace),
        Some(ns) if ns == namespace => {}
        Some(ns) => {
            return status::failure(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!(
                    "spec.resourceAttributes.namespace must match namespace: {namespace}: {ns}"
                ),
            )
        }
    }
    if review["metadata"]["namespace"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        review["metadata"]["namespace"] = json!(namespace);
    }
    answer(&auth, review, KIND, &user).await
}

/// `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`: may I?
pub async fn self_subject(State(auth): State<Authenticator>, req: Request) -> Response {
    let Some(user) = caller(&req) else {
        return status::unauthorized();
    };
    let review = match read_review(req, "SelfSubjectAccessReview").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Err(r) = check_one_of("SelfSubjectAccessReview", &review["spec"]) {
        return r;
    }
    answer(&auth, review, "SelfSubjectAccessReview", &user).await
}

/// `POST /apis/authorization.k8s.io/v1/selfsubjectrulesreviews`: what may I do in a namespace?
pub async fn self_rules(State(auth): State<Authenticator>, req: Request) -> Response {
    let Some(user) = caller(&req) else {
        return status::unauthorized();
    };
    let mut review = match read_review(req, "SelfSubjectRulesReview").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let namespace = review["spec"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if namespace.is_empty() {
        return status::failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "no namespace on request",
        );
    }
    auth.rbac.sync().await;
    let (rules, errors) = auth.rbac.rules_for(&user, &namespace);
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for r in &rules {
        if !r.resources.is_empty() {
            let mut rr =
                json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
            if !r.resource_names.is_empty() {
                rr["resourceNames"] = json!(r.resource_names);
            }
            resource_rules.push(rr);
        }
        if !r.non_resource_urls.is_empty() {
            non_resource_rules
                .push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
        }
    }
    let mut st = json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": false,
    });
    if !errors.is_empty() {
        st["evaluationError"] = json!(errors.join(", "));
    }
    review["kind"] = json!("SelfSubjectRulesReview");
    review["apiVersion"] = json!(GROUP_VERSION);
    if !review["metadata"].is_object() {
        review["metadata"] = json!({});
    }
    review["metadata"]["creationTimestamp"] = Value::Null;
    review["status"] = st;
    json(StatusCode::CREATED, &review)
}
