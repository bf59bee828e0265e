//! What a managed connection needs in IAM, decided from what IAM and the API server hold
//! and nothing else: pure, so that every case is a row of a table test. `super::ensure`
//! reads the facts, asks `plan`, and carries the steps out in order.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::api::conditions::Reason;
use crate::iam::{Held, KeyInfo, TAG_DELETION_POLICY};

/// What the executor read before deciding.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    pub user: &'a str,
    pub secret_name: &'a str,
    pub namespace: &'a str,
    /// The connection's key Secret, when it exists (and is this connection's).
    pub secret: Option<SecretFacts<'a>>,
    /// IAM's user, when it exists and is provably this connection's.
    pub held: Option<&'a Held>,
    /// IAM users made for the namespace's other connections (read when `held` is None).
    pub others: usize,
    pub max_per_namespace: usize,
    /// The inline policy the grant and the spec call for.
    pub wanted_policy: &'a serde_json::Value,
    /// `Delete` or `Retain`, as the user's tag records it.
    pub deletion_policy: &'a str,
    /// How old a key may get (`spec.credentials.managed.rotationInterval`).
    pub rotation: Duration,
    /// The least time between two keys made for the user.
    pub min_rotation_interval: Duration,
    /// The connection's rotation request (the annotation), if any.
    pub rotate_asked: Option<&'a str>,
    /// `key_digest` of the key last written to the Secret, as the status records it (the
    /// key the Secret holds, when it holds one, counts as delivered whatever this says).
    pub delivered: Option<&'a str>,
    pub now: Timestamp,
}

/// What the Secret says, read fresh from the API server.
#[derive(Clone, Copy, Debug, Default)]
pub struct SecretFacts<'a> {
    /// The access key id it holds.
    pub key_id: Option<&'a str>,
    /// The rotation request it records as handled.
    pub handled: Option<&'a str>,
}

/// One IAM write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Create the user, or correct its tags.
    EnsureUser,
    PutPolicy,
    /// Delete a key the Secret does not hold (an answer lost before it was written).
    DeleteKey(String),
    /// Make a key and write it to the Secret.
    CreateKey,
}

/// The IAM writes to make, in order, and what the status shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// The policy step changes a policy IAM already holds (spaced per connection).
    pub policy_spaced: bool,
    /// The new key replaces one the Secret holds (the previous goes once Ready).
    pub rotate: bool,
    /// When the key the Secret holds was made.
    pub key_created: Option<Timestamp>,
    /// The rotation request handled: as the Secret records it, or, with a new key made
    /// for it, the request itself.
    pub handled: Option<String>,
    /// An asked-for rotation waits until then (keys are made at most once per
    /// `min_rotation_interval`).
    pub waits_until: Option<Timestamp>,
    /// `key_digest` of the delivered key, for the status.
    pub delivered: Option<String>,
}

/// Why nothing is written: the condition's reason and its sentence.
pub type Refusal = (Reason, String);

/// Decides the IAM writes for one reconcile.
pub fn plan(f: &Facts) -> Result<Plan, Refusal> {
    let keys: &[KeyInfo] = f.held.map_or(&[], |h| &h.keys);
    // The Secret counts as holding a key only when IAM lists that key for this user: one a
    // tenant made, or one whose key was deleted in IAM, is never written to nor counted.
    let current = f.secret.and_then(|s| s.key_id);
    let held_key = current.and_then(|id| keys.iter().find(|k| k.id == id));
    if f.secret.is_some() && held_key.is_none() {
        return Err((
            Reason::ManagedResourceConflict,
            format!(
                "Secret {:?} holds no access key of IAM user {:?} (IAM lists no key with its key id): the operator did not write it, or its key was deleted in IAM. Delete the Secret, and the operator writes a new key to it.",
                f.secret_name, f.user
            ),
        ));
    }
    // The namespace's quota of IAM users, counted from IAM, applies before a user is made.
    if f.held.is_none() && f.others >= f.max_per_namespace {
        return Err((
            Reason::ManagedQuotaExceeded,
            format!(
                "Namespace {:?} has {} IAM users made for its S3Connections and the operator makes at most {} per namespace (--max-managed-per-namespace): delete another managed S3Connection, ask the cluster admin to raise the limit, or use spec.credentials.secretRef.",
                f.namespace, f.others, f.max_per_namespace
            ),
        ));
    }
    let created = held_key.and_then(|k| Timestamp::from_second(k.created).ok());
    // Keys are made at most once per min_rotation_interval whatever asks (a Secret deleted
    // in a loop, a request), from the newest key IAM lists: its dates survive a restart.
    let newest_key = keys.iter().max_by_key(|k| k.created);
    let newest = newest_key.and_then(|k| Timestamp::from_second(k.created).ok());
    let next_key_at = newest.and_then(|c| c.checked_add(f.min_rotation_interval).ok()).filter(|at| *at > f.now);
    let handled = f.secret.and_then(|s| s.handled);
    let due = rotation_due(created, f.now, f.rotation);
    let asked = f.rotate_asked.is_some() && f.rotate_asked != handled;
    // The newest key in IAM never reached the Secret (its answer was lost, or the operator
    // stopped before writing it): nobody holds it, so replacing it is no new key for anyone.
    // Delivered: the key the Secret holds, else the one the status last recorded.
    let delivered = current.map(key_digest).or_else(|| f.delivered.map(str::to_owned));
    let newest_undelivered = newest_key.is_some_and(|k| Some(key_digest(&k.id)) != delivered);
    // Asked-for rotations are spaced: a tenant cannot churn IAM keys toward AWS's quotas.
    let waits_until = next_key_at.filter(|_| asked && !due && !newest_undelivered);
    let key = f.secret.is_none();
    let rotate = !key && (due || asked) && waits_until.is_none();
    let held_policy = f.held.and_then(|h| h.policy.as_ref());
    let policy = held_policy != Some(f.wanted_policy);
    let tag = f.held.is_some_and(|h| h.tags.get(TAG_DELETION_POLICY).map(String::as_str) != Some(f.deletion_policy));

    let mut steps = Vec::new();
    if f.held.is_none() || tag {
        steps.push(Step::EnsureUser);
    }
    if policy {
        steps.push(Step::PutPolicy);
    }
    if key || rotate {
        if let (true, Some(at), false) = (key, next_key_at, newest_undelivered) {
            return Err((
                Reason::IamWritesSpaced,
                format!(
                    "The managed key Secret {:?} is gone and IAM user {:?} had a key made less than --min-rotation-interval ago: the operator makes its next key at {at}, and no sooner, whatever asks for it.",
                    f.secret_name, f.user
                ),
            ));
        }
        // Keys the Secret does not hold go first (this also keeps the user under AWS's
        // two-key limit).
        steps.extend(keys.iter().filter(|k| Some(k.id.as_str()) != current).map(|k| Step::DeleteKey(k.id.clone())));
        steps.push(Step::CreateKey);
    }
    let handled = if rotate && asked { f.rotate_asked } else { handled };
    Ok(Plan {
        steps,
        policy_spaced: policy && held_policy.is_some(),
        rotate,
        key_created: created,
        handled: handled.map(str::to_owned),
        waits_until,
        delivered,
    })
}

/// What the status records of an access key id: a digest, never the id.
pub fn key_digest(id: &str) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(format!("s3connect-access-key:{id}").as_bytes());
    hash[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a key made at `created` is `interval` old. A key of unknown age is not rotated
/// on age alone.
pub fn rotation_due(created: Option<Timestamp>, now: Timestamp, interval: Duration) -> bool {
    created.is_some_and(|c| Duration::try_from(now.duration_since(c)).is_ok_and(|age| age >= interval))
}

#[cfg(test)]
mod tests;
