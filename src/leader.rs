//! Leader election on a coordination.k8s.io Lease, so that with several replicas exactly
//! one reconciles. Losing the lease ends the process: a controller that might still be
//! writing after another took over is worse than a restart.
//!
//! client-go's rules, so that no two replicas ever act as leader at once: a lease held by
//! another is expired only when this replica has seen the same record unchanged for a whole
//! lease duration on its own clock (never by comparing the holder's renewTime with our
//! clock, which skew would break), and the leader gives up when it could not renew within
//! the renew deadline, which is shorter than the lease, so it stops before anyone else may
//! start.

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
    /// How often the leader renews and a standby looks (client-go: 2 s of a 15 s lease).
    fn retry_every(&self) -> Duration {
        self.lease_duration * 2 / 15
    }

    /// How long the leader keeps acting without a successful renewal (client-go: 10 s of
    /// a 15 s lease): shorter than the lease, so it has stopped before a standby's
    /// observed-time expiry lets that one start.
    pub fn renew_deadline(&self) -> Duration {
        self.lease_duration * 2 / 3
    }
}

/// The parts of a lease record whose change means its holder is alive.
type Record = (Option<String>, Option<MicroTime>, Option<MicroTime>, Option<i32>);

/// What a replica last saw of the lease, and when by its own clock.
#[derive(Debug, Default)]
pub struct Observed {
    record: Option<Record>,
    since: Option<std::time::Instant>,
}

impl Observed {
    /// Pure but for the clock passed in: who holds `lease` as of `now`, with expiry measured
    /// from when this replica first saw the current record.
    pub fn holder(&mut self, lease: &LeaseSpec, identity: &str, now: std::time::Instant) -> Holder {
        let record = (
            lease.holder_identity.clone(),
            lease.renew_time.clone(),
            lease.acquire_time.clone(),
            lease.lease_transitions,
        );
        if self.record.as_ref() != Some(&record) {
            self.record = Some(record);
            self.since = Some(now);
        }
        let who = lease.holder_identity.clone().unwrap_or_default();
        if who.is_empty() {
            return Holder::Nobody;
        }
        if who == identity {
            return Holder::Us;
        }
        let duration = Duration::from_secs(u64::try_from(lease.lease_duration_seconds.unwrap_or(15)).unwrap_or(15));
        match self.since {
            Some(since) if now.duration_since(since) < duration => Holder::Other(who),
            _ => Holder::Nobody,
        }
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
async fn try_hold(api: &Api<Lease>, s: &Settings, seen: &mut Observed) -> Result<bool, kube::Error> {
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
    let (acquired, transitions) = match seen.holder(&spec, &s.identity, std::time::Instant::now()) {
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
    let mut seen = Observed::default();
    loop {
        match try_hold(&api, s, &mut seen).await {
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
        tokio::time::sleep(s.retry_every()).await;
    }
}

/// Renews the lease until a renewal has not succeeded for the renew deadline (shorter than
/// the lease); returns then (leadership is lost). Each attempt is itself bounded by what is
/// left of the deadline, so a hung API server cannot stretch it.
pub async fn keep(client: &kube::Client, s: &Settings) {
    let api = Api::<Lease>::namespaced(client.clone(), &s.namespace);
    let mut last_renewal = std::time::Instant::now();
    let mut seen = Observed::default();
    loop {
        tokio::time::sleep(s.retry_every()).await;
        let left = s.renew_deadline().saturating_sub(last_renewal.elapsed());
        match tokio::time::timeout(left, try_hold(&api, s, &mut seen)).await {
            Ok(Ok(true)) => last_renewal = std::time::Instant::now(),
            Ok(Ok(false)) => {
                warn!(lease = %s.name, "another replica took the lease");
                return;
            }
            Ok(Err(e)) => warn!(lease = %s.name, error = %e, "could not renew the lease"),
            Err(_) => warn!(lease = %s.name, "renewing the lease did not finish in time"),
        }
        if last_renewal.elapsed() >= s.renew_deadline() {
            warn!(lease = %s.name, deadline_s = s.renew_deadline().as_secs_f32(), "the lease was not renewed within the renew deadline");
            return;
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

    fn spec(holder: &str, renewed: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            lease_duration_seconds: Some(duration),
            ..Default::default()
        }
    }

    #[test]
    fn another_replicas_lease_expires_only_after_a_whole_duration_seen_unchanged_on_our_clock() {
        let t0 = std::time::Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut seen = Observed::default();
        // The holder's renewTime is far in the past by our clock (skew): still valid, since
        // we have not watched it unchanged for a lease duration.
        assert_eq!(seen.holder(&spec("b", 1_000, 15), "a", at(0)), Holder::Other("b".into()));
        assert_eq!(seen.holder(&spec("b", 1_000, 15), "a", at(14)), Holder::Other("b".into()));
        // Renewed (the record changed): the clock starts again.
        assert_eq!(seen.holder(&spec("b", 1_010, 15), "a", at(14)), Holder::Other("b".into()));
        assert_eq!(seen.holder(&spec("b", 1_010, 15), "a", at(28)), Holder::Other("b".into()));
        assert_eq!(seen.holder(&spec("b", 1_010, 15), "a", at(29)), Holder::Nobody);
        // A renewTime in the future by our clock does not keep it alive either.
        let mut fresh = Observed::default();
        assert_eq!(fresh.holder(&spec("b", 9_999_999_999, 15), "a", at(0)), Holder::Other("b".into()));
        assert_eq!(fresh.holder(&spec("b", 9_999_999_999, 15), "a", at(15)), Holder::Nobody);
        assert_eq!(fresh.holder(&spec("a", 1, 15), "a", at(0)), Holder::Us);
        assert_eq!(fresh.holder(&LeaseSpec::default(), "a", at(0)), Holder::Nobody);
    }

    #[test]
    fn the_leader_stops_before_a_standby_may_start() {
        let s = Settings {
            namespace: "n".into(),
            name: "l".into(),
            identity: "a".into(),
            lease_duration: Duration::from_secs(15),
        };
        assert_eq!((s.renew_deadline(), s.retry_every()), (Duration::from_secs(10), Duration::from_secs(2)));
        assert!(s.renew_deadline() < s.lease_duration);
    }
}
