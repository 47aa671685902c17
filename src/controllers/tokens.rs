//! The tokens controller, for legacy service-account token Secrets: a Secret of type
//! `kubernetes.io/service-account-token` naming a service account (annotation
//! `kubernetes.io/service-account.name`) gets a signed token, the cluster CA and its namespace;
//! one whose account is gone is deleted, as upstream's controller does.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

const TYPE: &str = "kubernetes.io/service-account-token";
const NAME: &str = "kubernetes.io/service-account.name";
const UID: &str = "kubernetes.io/service-account.uid";

/// Signs a legacy token: (namespace, account, account uid, secret name) -> JWT.
pub type SignLegacy = Arc<dyn Fn(&str, &str, &str, &str) -> Option<String> + Send + Sync>;

/// What to do with one token Secret.
enum Action {
    Fill(Box<Secret>),
    Delete,
    Nothing,
}

fn decide(
    secret: &Secret,
    account: Option<&ServiceAccount>,
    ca: &str,
    sign: &SignLegacy,
) -> Action {
    let ann = secret.annotations();
    let Some(sa_name) = ann.get(NAME) else {
        return Action::Nothing;
    };
    let Some(sa) = account else {
        return Action::Delete;
    };
    let sa_uid = sa.metadata.uid.clone().unwrap_or_default();
    if let Some(uid) = ann.get(UID) {
        if !uid.is_empty() && *uid != sa_uid {
            return Action::Delete;
        }
    }
    let data = secret.data.clone().unwrap_or_default();
    if data.contains_key("token") && ann.get(UID) == Some(&sa_uid) {
        return Action::Nothing;
    }
    let ns = secret.namespace().unwrap_or_default();
    let Some(token) = sign(&ns, sa_name, &sa_uid, &secret.name_any()) else {
        return Action::Nothing;
    };
    let mut filled = secret.clone();
    filled
        .annotations_mut()
        .insert(UID.to_string(), sa_uid.clone());
    let mut d: BTreeMap<String, ByteString> = data;
    d.insert("token".into(), ByteString(token.into_bytes()));
    d.insert("ca.crt".into(), ByteString(ca.as_bytes().to_vec()));
    d.insert("namespace".into(), ByteString(ns.into_bytes()));
    filled.data = Some(d);
    Action::Fill(Box::new(filled))
}

/// Starts the controller on its own task.
pub fn spawn(
    client: Client,
    ca: String,
    sign: SignLegacy,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(client, ca, sign, stop))
}

/// Runs until `stop` turns true.
pub async fn run(client: Client, ca: String, sign: SignLegacy, mut stop: watch::Receiver<bool>) {
    let (accounts, account_writer) = reflector::store::<ServiceAccount>();
    let (secrets, secret_writer) = reflector::store::<Secret>();
    let sa_events = reflector(
        account_writer,
        watcher(
            Api::<ServiceAccount>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .map(|e| e.is_ok())
    .boxed();
    let by_type = watcher::Config::default().fields(&format!("type={TYPE}"));
    let secret_events = reflector(
        secret_writer,
        watcher(Api::<Secret>::all(client.clone()), by_type).default_backoff(),
    )
    .map(|e| e.is_ok())
    .boxed();
    let mut events = futures::stream::select(sa_events, secret_events);
    loop {
        if !super::next_burst(&mut events, &mut stop).await {
            return;
        }
        if !super::ready(&accounts) || !super::ready(&secrets) {
            continue;
        }
        for secret in secrets.state() {
            let ns = secret.namespace().unwrap_or_default();
            let account = secret
                .annotations()
                .get(NAME)
                .and_then(|n| accounts.get(&ObjectRef::new(n).within(&ns)));
            let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
            let result = match decide(&secret, account.as_deref(), &ca, &sign) {
                Action::Fill(filled) => api
                    .replace(&secret.name_any(), &PostParams::default(), &filled)
                    .await
                    .map(|_| ()),
                Action::Delete => api
                    .delete(&secret.name_any(), &DeleteParams::default())
                    .await
                    .map(|_| ()),
                Action::Nothing => Ok(()),
            };
            match result {
                Ok(()) => {}
                Err(kube::Error::Api(e)) if matches!(e.code, 404 | 409) => {}
                Err(e) => {
                    tracing::warn!(secret = %secret.name_any(), error = %e, "keeping a service-account token secret")
                }
            }
        }
    }
}
