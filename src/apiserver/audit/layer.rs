//! The audit middleware: between authentication and authorization, as upstream places it. It
//! decides each request's level from the policy and writes the RequestReceived,
//! ResponseStarted (watches) and ResponseComplete events, with the request and response objects
//! at the Request and RequestResponse levels.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;
use serde_json::Value;

use super::{event, Auditor, Level, Record};
use crate::apiserver::http::{long_running, Caller, Impersonator};
use crate::apiserver::registry::MAX_BODY;

/// RFC 3339 with microseconds, as upstream's audit timestamps.
fn now_micro() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

fn parse_object(body: &[u8], media: &str) -> Option<Value> {
    if body.is_empty() {
        return None;
    }
    if media.starts_with(crate::apiserver::protobuf::MEDIA_TYPE) {
        return crate::apiserver::protobuf::to_json(body, None).ok();
    }
    if media.contains("yaml") {
        return serde_yaml_ng::from_slice(body).ok();
    }
    serde_json::from_slice(body).ok()
}

/// What every event of one request shares.
struct Shared {
    auditor: Arc<Auditor>,
    id: String,
    level: Level,
    omit: Vec<String>,
    uri: String,
    attrs: crate::apiserver::auth::rbac::rules::Attributes,
    user: Option<crate::apiserver::http::User>,
    impersonated: Option<crate::apiserver::http::User>,
    source_ip: String,
    user_agent: String,
    received: String,
    api_version: String,
    request_object: Option<Value>,
}

impl Shared {
    fn emit(&self, stage: &str, code: Option<u16>, response_object: Option<&Value>) {
        if self.omit.iter().any(|s| s == stage) {
            return;
        }
        // Upstream records the authenticated user, and the identity it acted as.
        let (user, impersonated) = match &self.impersonated {
            Some(original) => (Some(original), self.user.as_ref()),
            None => (self.user.as_ref(), None),
        };
        let now = now_micro();
        let e = event(&Record {
            id: &self.id,
            stage,
            level: self.level,
            uri: &self.uri,
            attrs: &self.attrs,
            user,
            impersonated,
            source_ip: &self.source_ip,
            user_agent: &self.user_agent,
            received: &self.received,
            now: &now,
            code,
            request_object: self.request_object.as_ref(),
            response_object,
            api_version: &self.api_version,
        });
        self.auditor.writer.write_line(&e.to_string());
    }
}

/// Writes ResponseComplete when a watch's body ends or its client goes away.
struct CompleteOnDrop {
    shared: Arc<Shared>,
    code: u16,
}

impl Drop for CompleteOnDrop {
    fn drop(&mut self) {
        self.shared.emit("ResponseComplete", Some(self.code), None);
    }
}

fn header(req: &Request, name: axum::http::header::HeaderName) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// The middleware.
pub async fn audit(
    State(auditor): State<Option<Arc<Auditor>>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(auditor) = auditor else {
        return next.run(req).await;
    };
    let received = now_micro();
    let user = req.extensions().get::<Caller>().and_then(|c| c.0.clone());
    let impersonated = req.extensions().get::<Impersonator>().map(|i| i.0.clone());
    let watch = long_running(&req);
    let attrs = crate::apiserver::auth::request_attributes(
        req.method(),
        req.uri().path(),
        req.uri().query(),
        watch,
    );
    let policy_user = impersonated.as_ref().or(user.as_ref());
    let (level, omit) = auditor.policy.level(policy_user, &attrs);
    if level == Level::None {
        return next.run(req).await;
    }
    let user_agent = header(&req, axum::http::header::USER_AGENT);
    let media = header(&req, axum::http::header::CONTENT_TYPE);
    let source_ip = req
        .extensions()
        .get::<crate::apiserver::http::Peer>()
        .map(|p| p.0.ip().to_string())
        .unwrap_or_else(|| "127.0.0.1".into());
    let segs: Vec<&str> = req.uri().path().trim_matches('/').split('/').collect();
    let api_version = match segs.as_slice() {
        ["api", v, ..] => v.to_string(),
        ["apis", g, v, ..] => format!("{g}/{v}"),
        _ => String::new(),
    };
    let uri = req.uri().to_string();
    // The request object, for the Request level and above: the body is read and put back.
    let (parts, body) = req.into_parts();
    // Creates are read at every level too: the object names what the URL does not.
    let read_body = (level >= Level::Request || attrs.verb == "create") && !watch;
    let (req, request_object) = if read_body {
        match axum::body::to_bytes(body, MAX_BODY).await {
            Ok(bytes) => {
                let obj = parse_object(&bytes, &media);
                (Request::from_parts(parts, Body::from(bytes)), obj)
            }
            Err(_) => (Request::from_parts(parts, Body::empty()), None),
        }
    } else {
        (Request::from_parts(parts, body), None)
    };
    let mut attrs = attrs;
    if let (Some(r), Some(obj)) = (attrs.resource.as_mut(), &request_object) {
        if r.name.is_empty() {
            r.name = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
        }
    }
    let shared = Arc::new(Shared {
        auditor,
        id: uuid::Uuid::new_v4().to_string(),
        level,
        omit,
        uri,
        attrs,
        user,
        impersonated,
        source_ip,
        user_agent,
        received,
        api_version,
        request_object,
    });
    shared.emit("RequestReceived", None, None);
    let resp = next.run(req).await;
    let code = resp.status().as_u16();
    if watch && resp.status().is_success() {
        shared.emit("ResponseStarted", Some(code), None);
        let guard = CompleteOnDrop {
            shared: shared.clone(),
            code,
        };
        let (parts, body) = resp.into_parts();
        let stream = body.into_data_stream().map(move |chunk| {
            let _keep = &guard;
            chunk
        });
        return Response::from_parts(parts, Body::from_stream(stream));
    }
    if level >= Level::RequestResponse {
        let (parts, body) = resp.into_parts();
        let bytes: Bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        let media = parts
            .headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_string();
        shared.emit(
            "ResponseComplete",
            Some(code),
            parse_object(&bytes, &media).as_ref(),
        );
        return Response::from_parts(parts, Body::from(bytes));
    }
    shared.emit("ResponseComplete", Some(code), None);
    resp
}
