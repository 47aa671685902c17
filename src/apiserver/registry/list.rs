//! List, watch and delete-collection, served from the watch cache (pages after the first come
//! from the store at the first page's revision, so a paged list is one consistent snapshot).

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures::StreamExt;
use serde_json::{json, Value};

use super::object::{self, store_error, to_wire};
use super::selector::Selector;
use super::{json, Call};
use crate::apiserver::catalog::ResourceDef;
use crate::apiserver::status;
use crate::store::keys::key_after;
use crate::store::watch_cache::ReadFrom;
use crate::store::{self, Event, EventKind, KeyValue};

/// How often a watch that allows bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);
/// Keys read at a time for a paged list with selectors.
const LIST_CHUNK: usize = 500;
/// A watch without `timeoutSeconds` ends after this long, and the client re-watches.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

struct Filters {
    labels: Selector,
    fields: Selector,
    field_labels: &'static [(&'static str, &'static str)],
}

impl Filters {
    fn parse(call: &Call<'_>) -> Result<Filters, Response> {
        let bad = |e: super::selector::SelectorError| {
            status::failure(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string())
        };
        let field_labels = crate::apiserver::strategy::field_labels(call.def);
        let fields =
            Selector::parse_fields(call.query.field_selector.as_deref().unwrap_or_default())
                .map_err(bad)?;
        if let Some(k) = fields.keys().find(|k| {
            !matches!(*k, "metadata.name" | "metadata.namespace")
                && !field_labels.iter().any(|(f, _)| f == k)
        }) {
            return Err(status::failure(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("field label not supported: {k}"),
            ));
        }
        Ok(Filters {
            labels: Selector::parse_labels(
                call.query.label_selector.as_deref().unwrap_or_default(),
            )
            .map_err(bad)?,
            fields,
            field_labels,
        })
    }

    fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    /// What [`Filters::matches`] reads of an object.
    fn paths(&self) -> Vec<&str> {
        let mut paths = vec!["metadata.labels"];
        paths.extend(self.fields.keys());
        paths
    }

    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches_labels(obj)
            && self.fields.matches_fields(obj, |k| {
                self.field_labels
                    .iter()
                    .find(|(f, _)| *f == k)
                    .map_or("", |(_, v)| v)
            })
    }
}

fn continue_token(rv: i64, start: &str) -> String {
    let t = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start});
    base64::engine::general_purpose::STANDARD.encode(t.to_string())
}

fn parse_continue(token: &str) -> Option<(i64, String)> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token)
        .ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    Some((v["rv"].as_i64()?, v["start"].as_str()?.to_string()))
}

/// Which state a list reads, from resourceVersion and resourceVersionMatch.
fn read_from(call: &Call<'_>) -> Result<ReadFrom, Response> {
    let bad = |m: String| status::failure(StatusCode::BAD_REQUEST, "BadRequest", &m);
    let rv = call.query.resource_version.as_deref().unwrap_or_default();
    let parsed = || {
        rv.parse::<i64>().map_err(|_| {
            bad(format!(
                "resourceVersion: Invalid value: \"{rv}\": must be a non-negative integer"
            ))
        })
    };
    Ok(match (rv, call.query.resource_version_match.as_deref()) {
        ("", None | Some("")) => ReadFrom::Latest,
        ("0", None | Some("") | Some("NotOlderThan")) => ReadFrom::Any,
        (_, Some("Exact")) => ReadFrom::Exact(parsed()?),
        (_, None | Some("") | Some("NotOlderThan")) => ReadFrom::NotOlderThan(parsed()?),
        (_, Some(other)) => {
            return Err(bad(format!(
                "resourceVersionMatch: Unsupported value: \"{other}\""
            )))
        }
    })
}

fn list_kind(def: &ResourceDef) -> String {
    format!("{}List", def.kind)
}

/// Strips what list items leave out on the wire (apiVersion and kind).
fn item(mut obj: Value) -> Value {
    if let Some(o) = obj.as_object_mut() {
        o.remove("apiVersion");
        o.remove("kind");
    }
    obj
}

/// `GET` a collection.
pub async fn list(call: &Call<'_>) -> Response {
    let filters = match Filters::parse(call) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let prefix = object::prefix(call.def, call.ns());
    let limit = call.query.limit;
    let (from, start) = match &call.query.continue_token {
        Some(token) => match parse_continue(token) {
            Some((rv, start)) => (ReadFrom::Exact(rv), Some(format!("{prefix}{start}"))),
            None => {
                return status::failure(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "continue key is not valid",
                )
            }
        },
        None => match read_from(call) {
            Ok(f) => (f, None),
            Err(r) => return r,
        },
    };
    let filtered = !filters.is_empty();
    // Unfiltered, a page is exactly `limit` keys. With selectors the keys are read in chunks
    // until `limit` objects match and one more shows a next page exists.
    let chunk = match (limit, filtered) {
        (0, _) => 0,
        (l, false) => l,
        (l, true) => (l + 1).max(LIST_CHUNK),
    };
    let mut page = match call.reg.cache.list(&prefix, start.as_deref(), chunk, from).await {
        Ok(p) => p,
        Err(store::Error::Compacted { .. }) if call.query.continue_token.is_some() => {
            return status::failure(
                StatusCode::GONE,
                "Expired",
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
            )
        }
        Err(e) => return store_error(call.def, "", e),
    };
    // Stored bytes are what the client gets: they are copied, selectors read only the fields
    // they test ([`super::pick`]).
    let as_stored = call.table.is_none() && !crate::apiserver::convert::converts(call.def);
    if as_stored && !filtered {
        return fast_list(call, &prefix, &page);
    }
    let paths = super::pick::Paths::new(filters.paths());
    let mut items = Vec::new();
    let mut stored: Vec<KeyValue> = Vec::new();
    // The key of the last item returned, and whether more items may follow it.
    let mut last = None;
    let mut more = false;
    'pages: loop {
        for kv in &page.kvs {
            let obj = match as_stored {
                true => paths.pick(&kv.value).ok_or_else(|| corrupt(kv)),
                false => to_wire(call.def, kv),
            };
            let obj = match obj {
                Ok(o) => o,
                Err(r) => return r,
            };
            if !filters.matches(&obj) {
                continue;
            }
            if limit > 0 && items.len() + stored.len() >= limit {
                more = true;
                break 'pages;
            }
            last = Some(kv.key.clone());
            match as_stored {
                true => stored.push(kv.clone()),
                false => items.push(obj),
            }
        }
        // Unfiltered, the page is complete; filtered, the next chunk may hold more matches.
        let Some(read) = page.kvs.last().filter(|_| filtered && page.more) else {
            break;
        };
        // The next chunk, from the store at this page's revision.
        let next = key_after(&read.key);
        page = match call
            .reg
            .cache
            .list(&prefix, Some(&next), chunk, ReadFrom::Exact(page.revision))
            .await
        {
            Ok(p) => p,
            Err(e) => return store_error(call.def, "", e),
        };
    }
    let mut meta = json!({"resourceVersion": page.revision.to_string()});
    if let Some(last) = last.filter(|_| more || (!filtered && page.more)) {
        let rel = key_after(&last)[prefix.len()..].to_string();
        meta["continue"] = json!(continue_token(page.revision, &rel));
        // Upstream counts what is left only for lists without selectors.
        if let Some(left) = page.remaining.filter(|_| !filtered) {
            meta["remainingItemCount"] = json!(left);
        }
    }
    if let Some(v) = call.table {
        return json(StatusCode::OK, &call.table_of(v, &items, meta));
    }
    if as_stored {
        return stored_list(call.def, &meta, &stored);
    }
    let items: Vec<Value> = items.into_iter().map(item).collect();
    json(
        StatusCode::OK,
        &json!({
            "kind": list_kind(call.def),
            "apiVersion": call.def.group_version(),
            "metadata": meta,
            "items": items,
        }),
    )
}

/// A list with nothing to filter or render: items copied as stored ([`super::rawjson`]).
fn fast_list(
    call: &Call<'_>,
    prefix: &str,
    page: &crate::store::watch_cache::CachedList,
) -> Response {
    // The page holds at most `limit` keys; `more` says others follow.
    let take = page.kvs.len();
    let mut meta = json!({"resourceVersion": page.revision.to_string()});
    if let Some(last) = page.kvs.last().filter(|_| page.more) {
        let rel = key_after(&last.key)[prefix.len()..].to_string();
        meta["continue"] = json!(continue_token(page.revision, &rel));
        if let Some(left) = page.remaining {
            meta["remainingItemCount"] = json!(left);
        }
    }
    stored_list(call.def, &meta, &page.kvs[..take])
}

/// The 500 answer for a stored value that is not a JSON object.
fn corrupt(kv: &KeyValue) -> Response {
    tracing::error!(key = %kv.key, "stored object is not a JSON object");
    status::failure(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        "stored object is corrupt",
    )
}

/// A list response of stored objects, copied as stored ([`super::rawjson`]).
fn stored_list(def: &ResourceDef, meta: &Value, kvs: &[KeyValue]) -> Response {
    let size: usize = kvs.iter().map(|kv| kv.value.len() + 32).sum();
    let mut out = Vec::with_capacity(size + 256);
    out.extend_from_slice(
        format!(
            "{{\"kind\":{},\"apiVersion\":{},\"metadata\":{meta},\"items\":[",
            json!(list_kind(def)),
            json!(def.group_version())
        )
        .as_bytes(),
    );
    for (i, kv) in kvs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if !super::rawjson::write_item(&mut out, &kv.value, kv.mod_revision) {
            return corrupt(kv);
        }
    }
    out.extend_from_slice(b"]}");
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        out,
    )
        .into_response()
}

fn event_line(kind: &str, obj: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": obj}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn bookmark(def: &ResourceDef, rev: i64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line(
        "BOOKMARK",
        &json!({"kind": def.kind, "apiVersion": def.group_version(), "metadata": meta}),
    )
}

/// A watch event whose object is the stored `raw` at `rv`, copied without parsing it; `None`
/// (the event is skipped, as a corrupt object is by the parsing path) when it is not an object.
fn raw_line(def: &ResourceDef, kind: &str, raw: &[u8], rv: i64) -> Option<Bytes> {
    let mut out = Vec::with_capacity(raw.len() + 96);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    if !super::rawjson::write_object(&mut out, raw, rv, &def.group_version(), def.kind) {
        return None;
    }
    out.extend_from_slice(b"}\n");
    Some(Bytes::from(out))
}

/// How a watcher wants objects: as they are, or as one-row Tables.
#[derive(Clone)]
struct Render {
    table: Option<&'static str>,
    include: String,
    /// Nothing to filter, render or convert: events are copied as stored ([`raw_line`]).
    raw: bool,
    /// Not raw, but what is filtered or rendered needs only these fields of the stored
    /// object ([`translate_picked`]).
    pick: Option<super::pick::Paths>,
}

impl Render {
    fn line(&self, def: &ResourceDef, kind: &str, obj: &Value) -> Bytes {
        match self.table {
            Some(crate::apiserver::table::METADATA) => {
                event_line(kind, &crate::apiserver::table::partial(obj))
            }
            Some(v) => {
                let meta = json!({"resourceVersion": obj["metadata"]["resourceVersion"].clone()});
                let t = crate::apiserver::table::table(
                    def,
                    v,
                    std::slice::from_ref(obj),
                    meta,
                    &self.include,
                );
                event_line(kind, &t)
            }
            None => event_line(kind, obj),
        }
    }
}

/// The watch event a store event becomes for this watcher, if any: selector changes turn
/// modifications into additions or deletions, as upstream does.
fn translate(def: &ResourceDef, filters: &Filters, render: &Render, e: &Event) -> Option<Bytes> {
    if render.raw {
        return match e.kind {
            EventKind::Put if e.prev.is_none() => raw_line(def, "ADDED", &e.kv.value, e.revision()),
            EventKind::Put => raw_line(def, "MODIFIED", &e.kv.value, e.revision()),
            EventKind::Delete => raw_line(def, "DELETED", &e.prev.as_ref()?.value, e.revision()),
        };
    }
    if let Some(paths) = &render.pick {
        return translate_picked(def, filters, render, paths, e);
    }
    let event_line = |kind: &str, obj: &Value| render.line(def, kind, obj);
    let wire = |kv: &KeyValue| to_wire(def, kv).ok();
    match e.kind {
        EventKind::Put => {
            let cur = wire(&e.kv)?;
            let now = filters.matches(&cur);
            let before = e.prev.as_ref().and_then(wire).map(|p| filters.matches(&p));
            match (before, now) {
                (None, true) => Some(event_line("ADDED", &cur)),
                (Some(true), true) => Some(event_line("MODIFIED", &cur)),
                (Some(false), true) => Some(event_line("ADDED", &cur)),
                (Some(true), false) => Some(event_line("DELETED", &cur)),
                _ => None,
            }
        }
        EventKind::Delete => {
            let prev = e.prev.as_ref()?;
            let mut obj = wire(prev)?;
            if !filters.matches(&obj) {
                return None;
            }
            obj["metadata"]["resourceVersion"] = json!(e.revision().to_string());
            Some(event_line("DELETED", &obj))
        }
    }
}

/// [`translate`] for a watcher whose events need only a few fields of the stored object read
/// (to test its selectors, or the metadata of a `PartialObjectMetadata` watch): the stored
/// bytes are scanned once for those fields and, without a Table, sent as stored.
fn translate_picked(
    def: &ResourceDef,
    filters: &Filters,
    render: &Render,
    paths: &super::pick::Paths,
    e: &Event,
) -> Option<Bytes> {
    let (kind, kv, mut obj) = match e.kind {
        EventKind::Put => {
            let cur = paths.pick(&e.kv.value)?;
            let now = filters.matches(&cur);
            let before = e.prev.as_ref().and_then(|p| paths.pick(&p.value));
            let kind = match (before.map(|p| filters.matches(&p)), now) {
                (None, true) | (Some(false), true) => "ADDED",
                (Some(true), true) => "MODIFIED",
                (Some(true), false) => "DELETED",
                _ => return None,
            };
            (kind, &e.kv, cur)
        }
        EventKind::Delete => {
            let prev = e.prev.as_ref()?;
            let obj = paths.pick(&prev.value)?;
            if !filters.matches(&obj) {
                return None;
            }
            ("DELETED", prev, obj)
        }
    };
    if render.table.is_none() {
        return raw_line(def, kind, &kv.value, e.revision());
    }
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"]["resourceVersion"] = json!(e.revision().to_string());
    Some(render.line(def, kind, &obj))
}

/// `GET ...?watch=true`: a stream of JSON watch events.
pub async fn watch(call: &Call<'_>) -> Response {
    let filters = match Filters::parse(call) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let def = call.def;
    let stored_is_wire = !crate::apiserver::convert::converts(def);
    let raw = call.table.is_none() && filters.is_empty() && stored_is_wire;
    let pick = match call.table {
        _ if raw || !stored_is_wire => None,
        None => Some(super::pick::Paths::new(filters.paths())),
        Some(crate::apiserver::table::METADATA) => Some(super::pick::Paths::new(
            filters.paths().into_iter().chain(["metadata"]),
        )),
        Some(_) => None,
    };
    let render = Render {
        table: call.table,
        raw,
        pick,
        include: call
            .query
            .include_object
            .clone()
            .unwrap_or_else(|| "Metadata".into()),
    };
    let prefix = object::prefix(def, call.ns());
    let rv = call.query.resource_version.clone().unwrap_or_default();
    let send_initial = call
        .query
        .send_initial_events
        .unwrap_or(rv.is_empty() || rv == "0");
    let mut initial: Vec<Bytes> = Vec::new();
    let stream = if send_initial {
        match call.reg.cache.snapshot_and_watch(&prefix).await {
            Ok((kvs, rev, stream)) => {
                for kv in &kvs {
                    if render.raw {
                        initial.extend(raw_line(def, "ADDED", &kv.value, kv.mod_revision));
                    } else if let Ok(obj) = to_wire(def, kv) {
                        if filters.matches(&obj) {
                            initial.push(render.line(def, "ADDED", &obj));
                        }
                    }
                }
                if call.query.send_initial_events == Some(true) && call.query.allow_watch_bookmarks
                {
                    initial.push(bookmark(def, rev, true));
                }
                stream
            }
            Err(e) => return store_error(def, "", e),
        }
    } else {
        let from = match rv.parse::<i64>() {
            Ok(r) => r + 1,
            Err(_) => {
                return status::failure(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("resourceVersion: Invalid value: \"{rv}\""),
                )
            }
        };
        match call.reg.cache.watch(&prefix, from).await {
            Ok(s) => s,
            Err(store::Error::Compacted { compacted, .. }) => {
                // Upstream answers 200 and then a 410 ERROR event.
                let err = json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("too old resource version: {rv} ({compacted})"),
                    "reason": "Expired", "code": 410,
                });
                return stream_response(Body::from(event_line("ERROR", &err)));
            }
            Err(e) => return store_error(def, "", e),
        }
    };
    let timeout = call
        .query
        .timeout_seconds
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_WATCH_TIMEOUT);
    let bookmarks = call.query.allow_watch_bookmarks && !call.reg.cache.bypasses(&prefix);
    let cache = call.reg.cache.clone();
    let client: std::sync::Arc<str> = call.manager.as_str().into();
    let deadline = tokio::time::Instant::now() + timeout;
    let events = futures::stream::unfold(
        (
            stream,
            filters,
            tokio::time::Instant::now() + BOOKMARK_EVERY,
        ),
        move |(mut stream, filters, mut next_bookmark)| {
            let cache = cache.clone();
            let render = render.clone();
            let client = client.clone();
            async move {
                loop {
                    let wake = if bookmarks {
                        next_bookmark.min(deadline)
                    } else {
                        deadline
                    };
                    tokio::select! {
                        item = stream.next() => {
                            let batch = match item {
                                Some(Ok(batch)) => batch,
                                _ => {
                                    // The cache ended it (the client fell behind) or the
                                    // store's watch failed: the client watches again.
                                    tracing::debug!(%client, resource = %def.plural, "watch ended by the store");
                                    return None
                                }
                            };
                            let lines: Vec<Bytes> = batch.iter().filter_map(|e| translate(def, &filters, &render, e)).collect();
                            if lines.is_empty() {
                                continue;
                            }
                            return Some((Ok::<_, Infallible>(Bytes::from(lines.concat())), (stream, filters, next_bookmark)));
                        }
                        _ = tokio::time::sleep_until(wake) => {
                            if tokio::time::Instant::now() >= deadline {
                                return None;
                            }
                            next_bookmark = tokio::time::Instant::now() + BOOKMARK_EVERY;
                            let b = bookmark(def, cache.revision(), false);
                            return Some((Ok(b), (stream, filters, next_bookmark)));
                        }
                    }
                }
            }
        },
    );
    let head = futures::stream::iter(initial.into_iter().map(Ok::<_, Infallible>));
    stream_response(Body::from_stream(head.chain(events)))
}

fn stream_response(body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(body)
        .unwrap_or_else(|_| {
            status::failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "building the watch response",
            )
        })
}

/// `DELETE` a collection: every object matching the selectors, each deleted as a `DELETE` of it
/// with the same options would (grace periods, finalizers, propagation, admission).
pub async fn delete_collection(call: &Call<'_>, body: &Bytes) -> Response {
    let filters = match Filters::parse(call) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let prefix = object::prefix(call.def, call.ns());
    let page = match call
        .reg
        .store
        .range(store::RangeRequest {
            prefix,
            ..Default::default()
        })
        .await
    {
        Ok(p) => p,
        Err(e) => return store_error(call.def, "", e),
    };
    let mut deleted = Vec::new();
    for kv in &page.kvs {
        let Ok(obj) = to_wire(call.def, kv) else {
            continue;
        };
        if !filters.matches(&obj) {
            continue;
        }
        let mut info = call.info.clone();
        info.verb = "delete";
        info.name = obj["metadata"]["name"].as_str().map(str::to_string);
        let one = Call {
            reg: call.reg,
            def: call.def,
            info,
            query: call.query.clone(),
            table: None,
            manager: call.manager.clone(),
            user: call.user.clone(),
        };
        let resp = super::delete::delete(&one, body).await;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            continue;
        }
        if !status.is_success() {
            return resp;
        }
        let bytes = match axum::body::to_bytes(resp.into_body(), usize::MAX).await {
            Ok(b) => b,
            Err(_) => continue,
        };
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) if v["kind"] != "Status" => deleted.push(item(v)),
            _ => deleted.push(item(obj)),
        }
    }
    json(
        StatusCode::OK,
        &json!({
            "kind": list_kind(call.def),
            "apiVersion": call.def.group_version(),
            "metadata": {"resourceVersion": page.revision.to_string()},
            "items": deleted,
        }),
    )
}
