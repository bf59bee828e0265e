//! The validation: the probes with the connection's keys, then its platform registration
//! (intents recorded first).

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;

use super::facts::Facts;
use super::{Version, current, register};
use crate::api::conditions::{self, Cond};
use crate::api::connection::S3Connection;
use crate::controller::Context;
use crate::s3::client::Keys;
use crate::s3::probe::{self, Probe, Report};
use crate::s3::uri::Location;
use crate::validation::{self, Blocker, KeysFrom, Subject, Verdict, decide, keys_from};

/// What a validation found: the verdict (with the registration), the probes' report, and
/// the platform registrations as they are now.
pub(super) struct Validated {
    pub(super) verdict: Verdict,
    pub(super) report: Option<Report>,
    pub(super) platform_connections: Vec<crate::api::connection::PlatformConnection>,
    pub(super) registration_intents: Vec<crate::api::connection::RegistrationIntent>,
    /// Keys revoked (no grant covers the connection): the status no longer names them.
    pub(super) revoked: bool,
}

/// The probes with the connection's keys, then, once every probe passes, its registration
/// on the platform (intents recorded first, preconditioned on `written_at`).
pub(super) async fn validate(ctx: &Context, conn: &S3Connection, f: &Facts, written_at: &Version) -> Validated {
    let spec = &conn.spec;
    let owner = format!("{}/{}", f.namespace, f.name);
    let subject = Subject { spec, name: &f.name, namespace: &f.namespace, keys_from: KeysFrom::Secret };
    let existing = conn.status.as_ref().map(|s| s.platform_connections.clone()).unwrap_or_default();
    let mut platform_connections = existing.clone();
    let mut registration_intents =
        conn.status.as_ref().map(|s| s.platform_registration_intents.clone()).unwrap_or_default();
    let revoked = matches!(
        &f.managed_blocker,
        Some(Blocker::Managed { reason: conditions::Reason::ManagedBucketNotAllowed, .. })
    );
    let prepared = ready_to_probe(ctx, spec, f).await;
    let not_checked =
        || Cond::not_checked(conditions::REGISTERED, "the connection is registered once every probe passes");
    let (verdict, report) = match prepared {
        Ok((location, keys)) => {
            let probe =
                Probe { deadline: ctx.config.validation_timeout, ..validation::probe_for(spec, &location, &owner) };
            let report = probe::run(&probe, &keys).await;
            let mut verdict = decide(&subject, Ok((&location, &report)));
            if let Some(p) = &spec.platform {
                let registered = if !verdict.ready().is_true() {
                    not_checked()
                } else {
                    match crate::controller::platform::credentials(
                        f.platform_secret.as_ref(),
                        &p.secret_ref,
                        &f.namespace,
                    ) {
                        Err(cond) => cond,
                        Ok(creds) => {
                            // Registered per key values: a metadata-only change of the
                            // Secret never re-creates the registration.
                            let version =
                                f.secret_digest.clone().or_else(|| f.secret_version.clone()).unwrap_or_default();
                            let done = register::register(
                                &ctx.platform,
                                &creds,
                                spec,
                                &location,
                                &keys,
                                &existing,
                                &registration_intents,
                                &version,
                                &owner,
                                &f.uid,
                                &mut |intents| record_intents(ctx, conn, intents, written_at.clone()),
                            )
                            .await;
                            platform_connections = done.connections;
                            registration_intents = done.intents;
                            done.cond
                        }
                    }
                };
                verdict = validation::with_registration(verdict, registered);
            }
            // `keys` goes out of scope here: nothing below can read them.
            (verdict, Some(report))
        }
        Err(blocker) => {
            let mut verdict = decide(&subject, Err(&blocker));
            if spec.platform.is_some() {
                verdict = validation::with_registration(verdict, not_checked());
            }
            (verdict, None)
        }
    };
    Validated { verdict, report, platform_connections, registration_intents, revoked }
}

/// The location and keys to probe with, or what stops the probe: managed credentials not
/// made, a Secret the operator may not read, a spec or Secret problem, or an endpoint whose
/// name resolves only to internal addresses.
async fn ready_to_probe(
    ctx: &Context,
    spec: &crate::api::connection::S3ConnectionSpec,
    f: &Facts,
) -> Result<(Location, Keys), Blocker> {
    if let Some(blocker) = f.managed_blocker.clone() {
        return Err(blocker);
    }
    if f.forbidden {
        return Err(Blocker::SecretForbidden);
    }
    let (location, keys) = prepare(spec, &f.refs, f.secret.as_ref(), &ctx.config.allowed_endpoints)?;
    match internal_endpoint(spec, &location).await {
        Some(endpoint) => Err(Blocker::EndpointInternal { endpoint }),
        None => Ok((location, keys)),
    }
}

/// Everything a probe needs, or the one thing that stops it.
fn prepare(
    spec: &crate::api::connection::S3ConnectionSpec,
    refs: &crate::api::connection::CredentialsSecretRef,
    secret: Option<&Secret>,
    allowed: &crate::endpoints::AllowList,
) -> Result<(Location, Keys), Blocker> {
    let location = Location::parse(&spec.uri).map_err(|e| Blocker::InvalidUri(e.to_string()))?;
    if let Some(endpoint) = &spec.endpoint
        && !allowed.allows(endpoint)
    {
        return Err(Blocker::EndpointNotAllowed { endpoint: endpoint.clone(), allowed: allowed.to_string() });
    }
    // With virtual-hosted addressing the bucket becomes part of the host: the URL actually
    // contacted is what the allow-list must admit.
    if let Some(endpoint) = &spec.endpoint {
        let contacted = crate::s3::client::contacted_url(Some(endpoint), spec.force_path_style, &location.bucket, "");
        if !allowed.allows(&contacted) {
            return Err(Blocker::EndpointNotAllowed { endpoint: contacted, allowed: allowed.to_string() });
        }
    }
    let secret = secret.ok_or(Blocker::SecretNotFound)?;
    Ok((location, keys_from(secret, refs)?))
}

/// The URL contacted, when it is reached through a `*` of the allow-list and its name
/// resolves only to internal addresses (the requests would be refused where they are sent;
/// this says why, as the admin's decision rather than an unreachable store).
async fn internal_endpoint(spec: &crate::api::connection::S3ConnectionSpec, location: &Location) -> Option<String> {
    let endpoint = spec.endpoint.as_deref()?;
    let contacted = crate::s3::client::contacted_url(Some(endpoint), spec.force_path_style, &location.bucket, "");
    let host = crate::endpoints::host_of(&contacted)?;
    crate::aws::internal_only(host).await.then_some(contacted)
}

/// Writes the registrations about to be created into the status, before the platform is
/// asked: the whole status as it is, so that nothing else changes, preconditioned on the
/// version the decision was made from (a stale view is refused, and nothing is created).
fn record_intents(
    ctx: &Context,
    conn: &S3Connection,
    intents: Vec<crate::api::connection::RegistrationIntent>,
    version: Version,
) -> futures::future::BoxFuture<'static, Result<(), String>> {
    let mut status = conn.status.clone().unwrap_or_default();
    status.platform_registration_intents = intents;
    let api = Api::<S3Connection>::namespaced(ctx.client.clone(), &conn.namespace().unwrap_or_default());
    let name = conn.name_any();
    Box::pin(async move {
        let mut at = current(&version);
        match crate::controller::status::apply_at(&api, &name, &status, &mut at).await {
            Ok(()) => {
                if let Ok(mut v) = version.lock() {
                    *v = at;
                }
                Ok(())
            }
            Err(kube::Error::Api(status)) => Err(status.message),
            Err(other) => Err(other.to_string()),
        }
    })
}
