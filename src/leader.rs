//! Leader election on a coordination.k8s.io Lease, so that with several replicas exactly
//! one reconciles. Losing the lease ends the process: a controller that might still be
//! writing after another took over is worse than a restart.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tracing::{info, warn};

#[derive(Clone, Debug)]
pub struct Settings {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (the pod name in a cluster).
    pub identity: String,
    pub lease_duration: Duration,
}

impl Settings {
    fn renew_every(&self) -> Duration {
        self.lease_duration / 3
    }
}

/// What the lease says, as far as this replica is concerned.
#[derive(Debug, PartialEq, Eq)]
pub enum Holder {
    Us,
    Nobody,
    /// Someone else, whose lease is still valid.
    Other(String),
}

/// Pure: who holds `lease` at `now`.
pub fn holder(lease: &LeaseSpec, identity: &str, now: Timestamp) -> Holder {
    let who = lease.holder_identity.clone().unwrap_or_default();
    if who.is_empty() {
        return Holder::Nobody;
    }
    if who == identity {
        return Holder::Us;
    }
    let renewed = lease.renew_time.as_ref().or(lease.acquire_time.as_ref()).map(|t| t.0);
    let duration = i64::from(lease.lease_duration_seconds.unwrap_or(15));
    match renewed {
        Some(t) if now.as_second() < t.as_second() + duration => Holder::Other(who),
        _ => Holder::Nobody,
    }
}

fn our_spec(s: &Settings, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
    let now = MicroTime(Timestamp::now());
    LeaseSpec {
        holder_identity: Some(s.identity.clone()),
        lease_duration_seconds: Some(s.lease_duration.as_secs().max(1) as i32),
        acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
        renew_time: Some(now),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}

/// One attempt to take or keep the lease; true when we hold it afterwards. Conflicts (a
/// concurrent writer) count as not holding it.
async fn try_hold(api: &Api<Lease>, s: &Settings) -> Result<bool, kube::Error> {
    let Some(mut lease) = api.get_opt(&s.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta { name: Some(s.name.clone()), ..Default::default() },
            spec: Some(our_spec(s, None, 0)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let (acquired, transitions) = match holder(&spec, &s.identity, Timestamp::now()) {
        Holder::Other(_) => return Ok(false),
        Holder::Us => (spec.acquire_time.clone(), spec.lease_transitions.unwrap_or(0)),
        Holder::Nobody => (None, spec.lease_transitions.unwrap_or(0) + 1),
    };
    lease.spec = Some(our_spec(s, acquired, transitions));
    // replace() sends the resourceVersion we read: a concurrent writer makes this fail.
    match api.replace(&s.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Waits until this replica holds the lease.
pub async fn acquire(client: &kube::Client, s: &Settings) {
    let api = Api::<Lease>::namespaced(client.clone(), &s.namespace);
    let mut said = false;
    loop {
        match try_hold(&api, s).await {
            Ok(true) => {
                info!(lease = %s.name, identity = %s.identity, "became the leader");
                return;
            }
            Ok(false) if !said => {
                info!(lease = %s.name, identity = %s.identity, "waiting for leadership: another replica holds the lease");
                said = true;
            }
            Ok(false) => {}
            Err(e) => warn!(lease = %s.name, error = %e, "could not read or write the lease (check RBAC for leases)"),
        }
        tokio::time::sleep(s.renew_every()).await;
    }
}

/// Renews the lease until renewal fails for longer than the lease lasts; returns then
/// (leadership is lost).
pub async fn keep(client: &kube::Client, s: &Settings) {
    let api = Api::<Lease>::namespaced(client.clone(), &s.namespace);
    let mut last_renewal = std::time::Instant::now();
    loop {
        tokio::time::sleep(s.renew_every()).await;
        match try_hold(&api, s).await {
            Ok(true) => last_renewal = std::time::Instant::now(),
            Ok(false) => {
                warn!(lease = %s.name, "another replica took the lease");
                return;
            }
            Err(e) => {
                warn!(lease = %s.name, error = %e, "could not renew the lease");
                if last_renewal.elapsed() >= s.lease_duration {
                    return;
                }
            }
        }
    }
}

/// Gives the lease up, so that another replica takes over at once instead of after it
/// expires.
pub async fn release(client: &kube::Client, s: &Settings) {
    let api = Api::<Lease>::namespaced(client.clone(), &s.namespace);
    if let Ok(Some(mut lease)) = api.get_opt(&s.name).await
        && let Some(spec) = lease.spec.as_mut()
        && spec.holder_identity.as_deref() == Some(s.identity.as_str())
    {
        spec.holder_identity = None;
        spec.renew_time = None;
        spec.acquire_time = None;
        if api.replace(&s.name, &PostParams::default(), &lease).await.is_ok() {
            info!(lease = %s.name, "released the lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed_secs_ago: i64, duration: i32) -> LeaseSpec {
        let t = Timestamp::from_second(Timestamp::now().as_second() - renewed_secs_ago).unwrap();
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(t)),
            lease_duration_seconds: Some(duration),
            ..Default::default()
        }
    }

    #[test]
    fn a_valid_lease_of_another_replica_is_respected_until_it_expires() {
        let now = Timestamp::now();
        assert_eq!(holder(&spec("b", 2, 15), "a", now), Holder::Other("b".into()));
        assert_eq!(holder(&spec("b", 20, 15), "a", now), Holder::Nobody);
        assert_eq!(holder(&spec("a", 100, 15), "a", now), Holder::Us);
        assert_eq!(holder(&LeaseSpec::default(), "a", now), Holder::Nobody);
    }
}
