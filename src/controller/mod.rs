//! The controllers and what they share: the Kubernetes client, the event recorder and the
//! operator's configuration.

pub mod connection;
pub mod export;

use std::collections::HashMap;
use std::sync::Mutex;

use kube::runtime::events::{Recorder, Reporter};

use crate::endpoints::AllowList;

/// The field manager for everything the operator writes with server-side apply.
pub const FIELD_MANAGER: &str = "s3connect";

#[derive(Clone, Debug)]
pub struct Config {
    pub allowed_endpoints: AllowList,
    /// Reconciles running at once; bounds the probe load on S3 after a restart.
    pub concurrency: u16,
    /// Only this namespace, or all.
    pub namespace: Option<String>,
    /// Namespaces to leave alone (served by another instance, say).
    pub ignore_namespaces: Vec<String>,
}

impl Config {
    /// Watches skip the ignored namespaces on the server side.
    pub fn watch_config(&self) -> kube::runtime::watcher::Config {
        let selector: Vec<String> =
            self.ignore_namespaces.iter().map(|ns| format!("metadata.namespace!={ns}")).collect();
        let config = kube::runtime::watcher::Config::default();
        if selector.is_empty() { config } else { config.fields(&selector.join(",")) }
    }
}

pub struct Context {
    pub client: kube::Client,
    pub platform: crate::platform::Client,
    pub recorder: Recorder,
    /// Export report ids not yet written to status (see `export`).
    pub unrecorded: export::Unrecorded,
    pub config: Config,
    /// Consecutive failures per object uid, for backoff. In memory on purpose: after a
    /// restart the status's lastValidatedTime still spaces out the first retry.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: kube::Client,
        platform: crate::platform::Client,
        config: Config,
        instance: Option<String>,
    ) -> Self {
        let reporter = Reporter { controller: "s3connect".into(), instance };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            unrecorded: export::Unrecorded::default(),
            client,
            platform,
            config,
            failures: Mutex::default(),
        }
    }

    pub fn failures(&self, uid: &str) -> u32 {
        self.failures.lock().expect("not poisoned").get(uid).copied().unwrap_or(0)
    }

    /// Counts one more failure and returns the new count.
    pub fn record_failure(&self, uid: &str) -> u32 {
        let mut map = self.failures.lock().expect("not poisoned");
        let n = map.entry(uid.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    pub fn record_success(&self, uid: &str) {
        self.failures.lock().expect("not poisoned").remove(uid);
    }
}
