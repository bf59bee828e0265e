//! Registering a validated connection with the Labellerr platform, bringing it up to date
//! when the keys change, and removing it when the S3Connection is deleted.

use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::conditions::{Cond, REGISTERED, Reason};
use crate::api::connection::{PlatformConnection, RegistrationIntent, S3ConnectionSpec, Usage};
use crate::controller::platform::failure;
use crate::platform::{self, ConnectionForm, Credentials, PlatformError};
use crate::s3::client::Keys;
use crate::s3::uri::Location;

fn connection_type(usage: Usage) -> &'static str {
    match usage {
        Usage::Import => "import",
        Usage::Export => "export",
    }
}

/// The id DatasetExports use: the Export registration, else the Import one.
pub fn primary_id(connections: &[PlatformConnection]) -> Option<String> {
    let find = |t: &str| connections.iter().find(|c| c.connection_type == t).map(|c| c.id.clone());
    find("export").or_else(|| find("import"))
}

/// The name a registration is created under: deterministic (namespace, name, uid, usage
/// and the keys' version), so that one whose answer was lost is found again, and every
/// registration of a connection shares the prefix `name_prefix` its finalizer looks for.
pub fn registration_name(owner: &str, uid: &str, kind: &str, credentials_version: &str) -> String {
    format!("{}{kind} keys-{credentials_version}", name_prefix(owner, uid))
}

/// What every registration name of the connection `owner` (`namespace/name`) with `uid`
/// starts with. The uid makes it this object's alone: a connection of the same name in
/// another cluster sharing the platform account, or one deleted and made again, has
/// another, so neither adopts nor deletes the other's registrations.
pub fn name_prefix(owner: &str, uid: &str) -> String {
    format!("s3connect {owner} {uid} ")
}

pub struct Registration {
    pub cond: Cond,
    pub connections: Vec<PlatformConnection>,
    /// Creates whose outcome is still unknown: kept in status until resolved.
    pub intents: Vec<RegistrationIntent>,
}

/// Records the registration intents in status before a create; an error stops the create.
pub type RecordIntents<'a> = dyn FnMut(Vec<RegistrationIntent>) -> BoxFuture<'a, Result<(), String>> + Send + 'a;

/// Makes sure there is one platform connection per usage, registered with the current
/// keys. Each is tested first and created only when the platform's own test passes, and
/// only after the intent is recorded in status. After a create whose outcome is unknown
/// (or a restart with an intent recorded) the platform is searched by name and what is
/// found is adopted (extras under the same name deleted) instead of creating another.
/// A registration with older keys is replaced (new one first, then the old one deleted).
#[allow(clippy::too_many_arguments)]
pub async fn register(
    client: &platform::Client,
    creds: &Credentials,
    spec: &S3ConnectionSpec,
    location: &Location,
    keys: &Keys,
    existing: &[PlatformConnection],
    intents: &[RegistrationIntent],
    credentials_version: &str,
    owner: &str,
    uid: &str,
    record: &mut RecordIntents<'_>,
) -> Registration {
    let mut connections: Vec<PlatformConnection> = Vec::new();
    let mut pending: Vec<RegistrationIntent> = intents.to_vec();
    for usage in &spec.usage {
        let kind = connection_type(*usage);
        let current = existing.iter().find(|c| c.connection_type == kind);
        if let Some(c) = current.filter(|c| c.credentials_version == credentials_version) {
            connections.push(c.clone());
            pending.retain(|i| i.connection_type != kind);
            continue;
        }
        let name = registration_name(owner, uid, kind, credentials_version);
        let stop = |cond: Cond, connections: Vec<PlatformConnection>, pending: Vec<RegistrationIntent>| Registration {
            cond,
            connections: keep(existing, connections),
            intents: pending,
        };
        let mut id = None;
        if pending.iter().any(|i| i.connection_type == kind && i.name == name) {
            // An earlier create may have happened: look before creating again.
            match adopt(client, creds, kind, &name).await {
                Ok(found) => id = found,
                Err(e) => {
                    let doing = format!("looking for the {kind} connection {name:?}");
                    return stop(failure(REGISTERED, &doing, &e), connections, pending);
                }
            }
        }
        let id = match id {
            Some(id) => id,
            None => {
                let form = match tested(client, creds, spec, location, keys, kind).await {
                    Ok(form) => form,
                    Err(cond) => return stop(cond, connections, pending),
                };
                if let Err(cond) = record_intent(&mut pending, kind, &name, record).await {
                    return stop(cond, connections, pending);
                }
                match create(client, creds, &form, &name, location, owner).await {
                    Ok(id) => id,
                    Err((cond, maybe_created)) => {
                        if !maybe_created {
                            pending.retain(|i| i.connection_type != kind);
                        }
                        return stop(cond, connections, pending);
                    }
                }
            }
        };
        pending.retain(|i| i.connection_type != kind);
        if let Some(old) = current
            && let Err(e) = client.delete_connection(creds, &old.id).await
        {
            tracing::warn!(connection = owner, platform_connection = %old.id, error = %e, "could not delete the replaced platform connection");
        }
        connections.push(PlatformConnection {
            connection_type: kind.to_owned(),
            id,
            credentials_version: credentials_version.to_owned(),
        });
    }
    registered(client, connections, pending)
}

/// Every usage registered with the current keys.
fn registered(
    client: &platform::Client,
    connections: Vec<PlatformConnection>,
    pending: Vec<RegistrationIntent>,
) -> Registration {
    let ids: Vec<String> = connections.iter().map(|c| format!("{} {}", c.connection_type, c.id)).collect();
    Registration {
        cond: Cond::ok(
            REGISTERED,
            Reason::Registered,
            format!("Registered with the platform at {}: {}.", client.base_url(), ids.join(", ")),
        ),
        connections,
        intents: pending,
    }
}

/// The form of the `kind` registration, once the platform's own connection test passes
/// with it.
async fn tested<'a>(
    client: &platform::Client,
    creds: &Credentials,
    spec: &'a S3ConnectionSpec,
    location: &Location,
    keys: &'a Keys,
    kind: &'a str,
) -> Result<ConnectionForm<'a>, Cond> {
    let form = ConnectionForm {
        keys,
        path: format!("{}/{}", location.bucket, location.prefix),
        connection_type: kind,
        data_type: spec.data_type.as_str(),
    };
    if let Err(e) = client.test_connection(creds, &form).await {
        let doing = format!("the {kind} connection test for {location}");
        return Err(failure(REGISTERED, &doing, &e));
    }
    Ok(form)
}

/// Records the intent to create the `kind` registration `name` (in place of any earlier
/// one of that kind) before the platform hears of it; when it cannot be recorded, nothing
/// is created.
async fn record_intent(
    pending: &mut Vec<RegistrationIntent>,
    kind: &str,
    name: &str,
    record: &mut RecordIntents<'_>,
) -> Result<(), Cond> {
    pending.retain(|i| i.connection_type != kind);
    pending.push(RegistrationIntent {
        connection_type: kind.to_owned(),
        name: name.to_owned(),
        started_time: Time(Timestamp::now()),
    });
    if let Err(e) = record(pending.clone()).await {
        pending.retain(|i| i.connection_type != kind);
        return Err(Cond::failed(
            REGISTERED,
            Reason::PlatformUnreachable,
            format!("Could not record the registration before creating it ({e}); retrying with backoff."),
        ));
    }
    Ok(())
}

/// Creates the registration `name` and returns its id; after an unknown outcome, one found
/// under that name is adopted. Err says why not, and whether the platform may have made it
/// anyway (then the intent stays, and the next try looks again).
async fn create(
    client: &platform::Client,
    creds: &Credentials,
    form: &ConnectionForm<'_>,
    name: &str,
    location: &Location,
    owner: &str,
) -> Result<String, (Cond, bool)> {
    let kind = form.connection_type;
    let description = format!("Managed by s3connect (S3Connection {owner}) for {location}");
    match client.create_connection(creds, form, name, &description).await {
        Ok(id) => Ok(id),
        Err(e @ PlatformError::Unknown { .. }) => match adopt(client, creds, kind, name).await {
            Ok(Some(id)) => Ok(id),
            // Not there (yet): the intent stays, and the next try looks again.
            _ => {
                let doing = format!("creating the {kind} connection {name:?}");
                Err((failure(REGISTERED, &doing, &e), true))
            }
        },
        Err(e) => {
            // Refused, or never reached the platform: nothing was created.
            let doing = format!("creating the {kind} connection for {location}");
            Err((failure(REGISTERED, &doing, &e), false))
        }
    }
}

/// What is registered so far, plus the earlier registrations not yet replaced.
fn keep(existing: &[PlatformConnection], mut done: Vec<PlatformConnection>) -> Vec<PlatformConnection> {
    for c in existing {
        if !done.iter().any(|d| d.connection_type == c.connection_type) {
            done.push(c.clone());
        }
    }
    done
}

/// The registration of `kind` named `name`, if the platform has one; any extra ones under
/// that name (left by an earlier duplicate) are deleted.
async fn adopt(
    client: &platform::Client,
    creds: &Credentials,
    kind: &str,
    name: &str,
) -> Result<Option<String>, PlatformError> {
    let found = client.find_connections(creds, kind, |n| n == name).await?;
    let mut ids = found.into_iter().map(|r| r.id);
    let adopted = ids.next();
    for extra in ids {
        tracing::info!(name, platform_connection = %extra, "deleting a duplicate platform connection");
        client.delete_connection(creds, &extra).await?;
    }
    Ok(adopted)
}

/// Deletes every registration of the connection `owner`: the recorded ones, and whatever
/// the platform lists under its names (an unrecorded create, a duplicate).
pub async fn remove_all(
    client: &platform::Client,
    creds: &Credentials,
    owner: &str,
    uid: &str,
    recorded: &[PlatformConnection],
) -> Result<usize, (String, PlatformError)> {
    let prefix = name_prefix(owner, uid);
    let mut ids: Vec<String> = recorded.iter().map(|c| c.id.clone()).collect();
    for kind in ["import", "export"] {
        let found = client
            .find_connections(creds, kind, |n| n.starts_with(&prefix))
            .await
            .map_err(|e| (format!("listing the platform's {kind} connections"), e))?;
        ids.extend(found.into_iter().map(|r| r.id));
    }
    ids.sort();
    ids.dedup();
    for id in &ids {
        client.delete_connection(creds, id).await.map_err(|e| (format!("deleting platform connection {id}"), e))?;
    }
    Ok(ids.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pc(t: &str, id: &str) -> PlatformConnection {
        PlatformConnection { connection_type: t.into(), id: id.into(), credentials_version: "1".into() }
    }

    #[test]
    fn exports_use_the_export_registration() {
        assert_eq!(primary_id(&[pc("import", "i"), pc("export", "e")]).as_deref(), Some("e"));
        assert_eq!(primary_id(&[pc("import", "i")]).as_deref(), Some("i"));
        assert_eq!(primary_id(&[]), None);
    }

    #[test]
    fn a_failure_keeps_the_registrations_not_yet_replaced() {
        let kept = keep(&[pc("import", "old-i"), pc("export", "old-e")], vec![pc("import", "new-i")]);
        assert_eq!(kept, [pc("import", "new-i"), pc("export", "old-e")]);
    }

    #[test]
    fn registration_names_are_deterministic_and_share_the_connections_prefix() {
        let name = registration_name("team-a/images", "u-1", "import", "42");
        assert_eq!(name, "s3connect team-a/images u-1 import keys-42");
        assert!(name.starts_with(&name_prefix("team-a/images", "u-1")));
        assert!(
            !registration_name("team-a/images-2", "u-1", "import", "42")
                .starts_with(&name_prefix("team-a/images", "u-1"))
        );
        // Another object of the same namespace and name (another cluster, or made again).
        assert!(!name.starts_with(&name_prefix("team-a/images", "u-2")));
    }
}
