//! IAM for managed credentials: the operator, with its own AWS identity (aws-config's
//! default chain: IRSA, EKS Pod Identity, environment, profiles), makes one IAM user per
//! managed S3Connection under a dedicated path, gives it exactly the connection's
//! least-privilege policy, and creates, rotates and deletes its access keys.
//!
//! A user is the operator's only when its tags say so: the installation's id, and the
//! namespace, name and uid of its S3Connection. A name is never enough (a person's
//! `john.smith`, another installation's user, a Retained user of an earlier connection of
//! the same name): such a user is left untouched and reported as a conflict. A policy is
//! put (replaced) whole, and an access key that is in no Secret the operator wrote (a
//! create whose answer was lost) is deleted before a new one is made.

use std::collections::BTreeMap;

use aws_sdk_iam::error::{ProvideErrorMetadata, SdkError};
use serde_json::{Value, json};

use crate::s3::client::Keys;

/// The IAM path every managed user is created under; users elsewhere are never touched.
pub const DEFAULT_PATH: &str = "/s3connect/";
/// The inline policy's name on each managed user.
pub const POLICY_NAME: &str = "s3connect";

/// What went wrong in IAM, in terms a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IamError {
    /// The operator's identity may not `action`.
    Denied { action: &'static str, detail: String },
    /// A user of that name exists and is not this connection's: `why` says how we know.
    Foreign { user: String, why: String },
    /// A user of that name is tagged by this installation's release under another id: it
    /// may be this connection's, which cannot be proven, so nothing is done to it.
    Unprovable { user: String, why: String },
    /// IAM refused the request for another reason (a limit, a malformed boundary ARN).
    Rejected { action: &'static str, code: String, detail: String },
    /// No answer, a 5xx or throttling: retried with backoff.
    Unavailable { action: &'static str, detail: String },
}

impl std::fmt::Display for IamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IamError::Denied { action, detail } => write!(
                f,
                "IAM denied {action} to the operator's own identity ({detail}): add it to statement {} of the operator's policy (`s3connect policy --operator` prints the whole policy).",
                statement_of(action)
            ),
            IamError::Foreign { user, why } => write!(
                f,
                "IAM user {user:?} already exists and is not this S3Connection's ({why}); the operator leaves it untouched: rename the S3Connection (the user is named <namespace>.<name>), have its owner delete that user, or use spec.credentials.secretRef."
            ),
            IamError::Unprovable { user, why } => write!(
                f,
                "IAM user {user:?} may be this S3Connection's, but that cannot be proven ({why}); the operator leaves it and its keys as they are and keeps the finalizer until a person decides."
            ),
            IamError::Rejected { action, code, detail } => {
                write!(f, "IAM refused {action} ({code}: {detail}): fix what IAM names, then the operator tries again.")
            }
            IamError::Unavailable { action, detail } => {
                write!(f, "IAM did not complete {action} ({detail}); retrying with backoff.")
            }
        }
    }
}

/// The statement of `operator_policy` that grants `action`.
fn statement_of(action: &str) -> &'static str {
    match action {
        "iam:CreateUser" | "iam:TagUser" => "S3ConnectCreateUsers",
        "iam:ListUsers" => "S3ConnectListUsers",
        _ => "S3ConnectManageUsers",
    }
}

impl IamError {
    pub fn is_transient(&self) -> bool {
        matches!(self, IamError::Unavailable { .. })
    }
}

fn classify<E: ProvideErrorMetadata>(
    action: &'static str,
    e: &SdkError<E, aws_sdk_iam::config::http::HttpResponse>,
) -> IamError {
    let detail =
        crate::api::conditions::printable(&bounded(&anonymous(e.message().unwrap_or("no message")))).into_owned();
    match e {
        SdkError::ServiceError(service) => {
            // An error body IAM's parser cannot read (a proxy's, say) still has a status.
            let status = service.raw().status().as_u16();
            let fallback = match status {
                401 | 403 => "AccessDenied",
                404 => "NoSuchEntity",
                429 => "Throttling",
                s if s >= 500 => "ServiceFailure",
                _ => "Unknown",
            };
            let code = e.code().unwrap_or(fallback).to_owned();
            match code.as_str() {
                "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" => {
                    IamError::Denied { action, detail: format!("{code}: {detail}") }
                }
                "Throttling" | "ThrottlingException" | "ServiceFailure" | "ServiceUnavailable" | "InternalFailure" => {
                    IamError::Unavailable { action, detail: format!("{code}: {detail}") }
                }
                // An identity IAM does not know is the operator's credentials, not the user's.
                "InvalidClientTokenId" | "SignatureDoesNotMatch" | "ExpiredToken" => {
                    IamError::Denied { action, detail: format!("{code}: {detail}") }
                }
                _ => IamError::Rejected { action, code, detail },
            }
        }
        SdkError::ResponseError(_) | SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            IamError::Unavailable { action, detail: "no answer".into() }
        }
        _ => IamError::Unavailable { action, detail: "the request could not be made".into() },
    }
}

/// IAM's error text without what a tenant reading a status must not learn: the AWS
/// account id and the operator's role or user ARN ("User: arn:aws:sts::123456789012:
/// assumed-role/... is not authorized to perform ...").
fn anonymous(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let trimmed = word.trim_end_matches([',', '.', ';', ')']);
        let tail = &word[trimmed.len()..];
        if trimmed.starts_with("arn:") {
            out.push_str("<an ARN>");
            out.push_str(tail);
        } else {
            // A 12-digit AWS account id on its own, or inside another token.
            let mut run = 0;
            let mut masked = String::with_capacity(word.len());
            for c in word.chars() {
                run = if c.is_ascii_digit() { run + 1 } else { 0 };
                masked.push(c);
                if run == 12 {
                    masked.truncate(masked.len() - 12);
                    masked.push_str("<account>");
                }
            }
            out.push_str(&masked);
        }
    }
    out
}

fn bounded(text: &str) -> String {
    text.chars().take(300).collect()
}

fn no_such_entity<E: ProvideErrorMetadata>(e: &SdkError<E, aws_sdk_iam::config::http::HttpResponse>) -> bool {
    match e {
        SdkError::ServiceError(s) => {
            e.code() == Some("NoSuchEntity") || (e.code().is_none() && s.raw().status().as_u16() == 404)
        }
        _ => false,
    }
}

/// An access key's id and when it was made (seconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub id: String,
    pub created: i64,
}

/// The IAM user name for connection `name` in `namespace`: `<namespace>.<name>` (a
/// namespace has no dots, so no two connections share one), or, past IAM's 64 characters,
/// its first 55 and a hash of the whole.
pub fn user_name(namespace: &str, name: &str) -> String {
    let full = format!("{namespace}.{name}");
    if full.len() <= 64 {
        return full;
    }
    format!("{}-{}", &full[..55], crate::text::short_hash(&full))
}

/// Tag keys every managed user carries.
pub const TAG_INSTALLATION: &str = "s3connect.io/installation";
pub const TAG_RELEASE: &str = "s3connect.io/release";
pub const TAG_NAMESPACE: &str = "s3connect.io/namespace";
pub const TAG_NAME: &str = "s3connect.io/name";
pub const TAG_UID: &str = "s3connect.io/uid";
/// The deletion policy a grant allowed for the user's connection: what the sweep does with
/// the user once that connection is gone (its keys always go).
pub const TAG_DELETION_POLICY: &str = "s3connect.io/deletion-policy";
/// Set when a connection with `deletionPolicy: Retain` was deleted: the user is a person's
/// from then on, and the operator never touches it again.
pub const TAG_RELEASED: &str = "s3connect.io/released";

/// Whose a managed user is: written as tags when the user is made, compared before the
/// operator adopts, changes or deletes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The installation's id (made once, kept in a ConfigMap: see `installation`).
    pub installation: String,
    /// The installation's name (the Helm release), for a person reading the tags.
    pub release: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl Owner {
    fn tags(&self) -> [(&'static str, &str); 5] {
        [
            (TAG_INSTALLATION, &self.installation),
            (TAG_RELEASE, &self.release),
            (TAG_NAMESPACE, &self.namespace),
            (TAG_NAME, &self.name),
            (TAG_UID, &self.uid),
        ]
    }

    /// Why a user with `tags` is not this owner's, or None when it is.
    pub fn mismatch(&self, tags: &std::collections::BTreeMap<String, String>) -> Option<Mismatch> {
        let tag = |k: &str| tags.get(k).map(String::as_str);
        match tag(TAG_INSTALLATION) {
            None => Some(Mismatch::NotOurs(format!("it has no {TAG_INSTALLATION} tag: the operator did not make it"))),
            // The same release under another id: this installation's id was made anew (its
            // ConfigMap deleted, a restore), so whether the user is ours cannot be proven.
            Some(i) if i != self.installation && tag(TAG_RELEASE) == Some(self.release.as_str()) => {
                Some(Mismatch::Unprovable(format!(
                    "it is tagged for installation {:?} with id {i:?}, and this installation's id is {:?}: if the installation's ConfigMap was made anew, put the old id back (see docs/managed-credentials.md, \"Installation id\")",
                    self.release, self.installation
                )))
            }
            Some(_) if tag(TAG_INSTALLATION) != Some(self.installation.as_str()) => Some(Mismatch::NotOurs(format!(
                "it belongs to another s3connect installation ({})",
                tag(TAG_RELEASE).unwrap_or("unnamed")
            ))),
            Some(_) if tags.contains_key(TAG_RELEASED) => Some(Mismatch::NotOurs(format!(
                "it was kept for a person when S3Connection {}/{} was deleted with deletionPolicy Retain",
                tag(TAG_NAMESPACE).unwrap_or("?"),
                tag(TAG_NAME).unwrap_or("?")
            ))),
            Some(_) if tag(TAG_UID) != Some(self.uid.as_str()) => Some(Mismatch::NotOurs(format!(
                "it was made for an earlier S3Connection {}/{} (another uid); the operator removes such a user within one sweep once that S3Connection is gone",
                tag(TAG_NAMESPACE).unwrap_or("?"),
                tag(TAG_NAME).unwrap_or("?")
            ))),
            Some(_) => None,
        }
    }
}

/// Why a user is not an owner's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// Provably someone else's: a person's, another installation's, one released by Retain.
    NotOurs(String),
    /// Tagged by this installation's release under another id: it may be ours, and nothing
    /// is done to it (nor reported done) until a person decides.
    Unprovable(String),
}

impl Mismatch {
    pub fn why(&self) -> &str {
        match self {
            Mismatch::NotOurs(w) | Mismatch::Unprovable(w) => w,
        }
    }
}

/// IAM, as the operator's own identity.
#[derive(Clone, Debug)]
pub struct Iam {
    client: aws_sdk_iam::Client,
    path: String,
    boundary: Option<String>,
}

impl Iam {
    /// The operator's identity from aws-config's default chain (`AWS_ENDPOINT_URL_IAM`
    /// and the rest of the standard variables apply).
    pub async fn from_environment(path: String, boundary: Option<String>) -> Iam {
        let config = crate::aws::config_loader().load().await;
        // IAM is global; signing still needs a region, which a bare environment may lack.
        let region = config.region().cloned().unwrap_or_else(|| aws_sdk_iam::config::Region::from_static("us-east-1"));
        // No SDK retries: a create whose answer was lost must not be sent again blindly;
        // the controller looks (ListAccessKeys) before it creates again.
        let client = aws_sdk_iam::Client::from_conf(
            aws_sdk_iam::config::Builder::from(&config)
                .region(region)
                .retry_config(aws_sdk_iam::config::retry::RetryConfig::disabled())
                .build(),
        );
        Iam { client, path, boundary }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// What IAM holds for `owner`'s user: None when there is no user of that name; Err
    /// (Foreign or Unprovable) when there is one and it is not provably `owner`'s.
    pub async fn observe(&self, user: &str, owner: &Owner) -> Result<Option<Held>, IamError> {
        let Some(tags) = self.owned_tags(user, owner).await? else { return Ok(None) };
        let keys = self.keys(user).await?;
        let policy = self.policy(user).await?;
        Ok(Some(Held { tags, keys, policy }))
    }

    /// Makes the user with `owner`'s tags, or adopts it when it exists under our path with
    /// them; `deletion_policy` is kept as a tag (what the sweep does once the connection is
    /// gone), and brought up to date when it differs. `known` is the user's tags as just
    /// observed (None: no user then).
    pub async fn ensure_user(
        &self,
        user: &str,
        owner: &Owner,
        deletion_policy: &str,
        known: Option<&BTreeMap<String, String>>,
    ) -> Result<(), IamError> {
        if let Some(tags) = known {
            if tags.get(TAG_DELETION_POLICY).map(String::as_str) != Some(deletion_policy) {
                self.set_tags(user, &[(TAG_DELETION_POLICY, deletion_policy)]).await?;
            }
            return Ok(());
        }
        let mut create =
            self.client.create_user().user_name(user).path(&self.path).set_permissions_boundary(self.boundary.clone());
        for (key, value) in owner.tags().into_iter().chain([(TAG_DELETION_POLICY, deletion_policy)]) {
            create = create.tags(tag(key, value)?);
        }
        match create.send().await {
            Ok(_) => Ok(()),
            Err(e) if matches!(e, SdkError::ServiceError(_)) && e.code() == Some("EntityAlreadyExists") => {
                let out =
                    self.client.get_user().user_name(user).send().await.map_err(|e| classify("iam:GetUser", &e))?;
                self.ours(user, out.user().map(|u| u.path()), owner).await.map(|_| ())
            }
            Err(e) => Err(classify("iam:CreateUser", &e)),
        }
    }

    /// The user's tags when it is under our path and tagged as `owner`'s.
    async fn ours(&self, user: &str, path: Option<&str>, owner: &Owner) -> Result<BTreeMap<String, String>, IamError> {
        let path = path.unwrap_or("/");
        if path != self.path {
            return Err(IamError::Foreign {
                user: user.to_owned(),
                why: format!("it is under path {path:?}, not the operator's {:?}", self.path),
            });
        }
        let tags = self.tags(user).await?.unwrap_or_default();
        match owner.mismatch(&tags) {
            None => Ok(tags),
            Some(Mismatch::NotOurs(why)) => Err(IamError::Foreign { user: user.to_owned(), why }),
            Some(Mismatch::Unprovable(why)) => Err(IamError::Unprovable { user: user.to_owned(), why }),
        }
    }

    /// Whether the user exists and is `owner`'s; Err(Foreign or Unprovable) when it exists
    /// and is not provably so.
    async fn owned(&self, user: &str, owner: &Owner) -> Result<bool, IamError> {
        self.owned_tags(user, owner).await.map(|t| t.is_some())
    }

    /// The tags of `owner`'s user, None when there is no such user.
    async fn owned_tags(&self, user: &str, owner: &Owner) -> Result<Option<BTreeMap<String, String>>, IamError> {
        match self.client.get_user().user_name(user).send().await {
            Ok(out) => self.ours(user, out.user().map(|u| u.path()), owner).await.map(Some),
            Err(e) if no_such_entity(&e) => Ok(None),
            Err(e) => Err(classify("iam:GetUser", &e)),
        }
    }

    /// A user's tags; None when the user is gone.
    pub async fn tags(&self, user: &str) -> Result<Option<BTreeMap<String, String>>, IamError> {
        match self.client.list_user_tags().user_name(user).send().await {
            Ok(out) => Ok(Some(out.tags().iter().map(|t| (t.key().to_owned(), t.value().to_owned())).collect())),
            Err(e) if no_such_entity(&e) => Ok(None),
            Err(e) => Err(classify("iam:ListUserTags", &e)),
        }
    }

    async fn set_tags(&self, user: &str, tags: &[(&str, &str)]) -> Result<(), IamError> {
        let mut call = self.client.tag_user().user_name(user);
        for (key, value) in tags {
            call = call.tags(tag(key, value)?);
        }
        call.send().await.map(|_| ()).map_err(|e| classify("iam:TagUser", &e))
    }

    /// The names of the users under the operator's path (every page).
    pub async fn users(&self) -> Result<Vec<String>, IamError> {
        let mut names = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let out = self
                .client
                .list_users()
                .path_prefix(&self.path)
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| classify("iam:ListUsers", &e))?;
            // Only users exactly under our path: a prefix also lists deeper paths.
            names.extend(out.users().iter().filter(|u| u.path() == self.path).map(|u| u.user_name().to_owned()));
            match (out.is_truncated(), out.marker()) {
                (true, Some(m)) if !m.is_empty() => marker = Some(m.to_owned()),
                _ => return Ok(names),
            }
        }
    }

    /// The user's inline policy as IAM holds it (None: there is none). IAM answers the
    /// document URL-encoded; one that is not JSON reads as "not the policy we want".
    pub async fn policy(&self, user: &str) -> Result<Option<Value>, IamError> {
        match self.client.get_user_policy().user_name(user).policy_name(POLICY_NAME).send().await {
            Ok(out) => {
                let raw = out.policy_document();
                let parsed = serde_json::from_str(raw)
                    .or_else(|_| serde_json::from_str(&percent_decode(raw)))
                    .unwrap_or(Value::Null);
                Ok(Some(parsed))
            }
            Err(e) if no_such_entity(&e) => Ok(None),
            Err(e) => Err(classify("iam:GetUserPolicy", &e)),
        }
    }

    /// Replaces the user's inline policy with `document`.
    pub async fn put_policy(&self, user: &str, document: &Value) -> Result<(), IamError> {
        self.client
            .put_user_policy()
            .user_name(user)
            .policy_name(POLICY_NAME)
            .policy_document(document.to_string())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify("iam:PutUserPolicy", &e))
    }

    pub async fn keys(&self, user: &str) -> Result<Vec<KeyInfo>, IamError> {
        let out = match self.client.list_access_keys().user_name(user).send().await {
            Ok(out) => out,
            Err(e) if no_such_entity(&e) => return Ok(Vec::new()),
            Err(e) => return Err(classify("iam:ListAccessKeys", &e)),
        };
        Ok(out
            .access_key_metadata()
            .iter()
            .filter_map(|k| {
                Some(KeyInfo { id: k.access_key_id()?.to_owned(), created: k.create_date().map_or(0, |d| d.secs()) })
            })
            .collect())
    }

    /// A new access key. Not idempotent: the caller writes it down at once, and deletes
    /// keys it has no record of before making another.
    pub async fn create_key(&self, user: &str) -> Result<Keys, IamError> {
        let out = self
            .client
            .create_access_key()
            .user_name(user)
            .send()
            .await
            .map_err(|e| classify("iam:CreateAccessKey", &e))?;
        let key = out.access_key().ok_or_else(|| IamError::Unavailable {
            action: "iam:CreateAccessKey",
            detail: "the answer had no key".into(),
        })?;
        Ok(Keys {
            access_key_id: key.access_key_id().to_owned(),
            secret_access_key: key.secret_access_key().to_owned(),
            session_token: None,
        })
    }

    /// Deletes an access key; one already gone is fine.
    pub async fn delete_key(&self, user: &str, id: &str) -> Result<(), IamError> {
        match self.client.delete_access_key().user_name(user).access_key_id(id).send().await {
            Ok(_) => Ok(()),
            Err(e) if no_such_entity(&e) => Ok(()),
            Err(e) => Err(classify("iam:DeleteAccessKey", &e)),
        }
    }

    /// Takes every access away from `owner`'s user: each key deactivated (so that it stops
    /// working even if a later call fails), then deleted, then the inline policy. The user
    /// itself stays, empty, for the connection's deletion. Returns how many keys went; a
    /// user that is gone, or provably not `owner`'s, is left alone (Ok(0)); one whose
    /// ownership cannot be proven is an error (Unprovable), never a reported success.
    pub async fn revoke(&self, user: &str, owner: &Owner) -> Result<usize, IamError> {
        match self.owned(user, owner).await {
            Ok(true) => {}
            Ok(false) | Err(IamError::Foreign { .. }) => return Ok(0),
            Err(e) => return Err(e),
        }
        self.strip(user).await
    }

    /// Revoke's work on a user already shown to be ours.
    async fn strip(&self, user: &str) -> Result<usize, IamError> {
        let keys = self.keys(user).await?;
        for key in &keys {
            self.deactivate_key(user, &key.id).await?;
        }
        for key in &keys {
            self.delete_key(user, &key.id).await?;
        }
        self.delete_policy(user).await?;
        Ok(keys.len())
    }

    /// Deletes every key of `owner`'s user but `keep`; Err(Foreign) when the user is not
    /// `owner`'s (nothing is touched then).
    pub async fn delete_other_keys(&self, user: &str, owner: &Owner, keep: &str) -> Result<usize, IamError> {
        if !self.owned(user, owner).await? {
            return Ok(0);
        }
        let mut deleted = 0;
        for key in self.keys(user).await?.iter().filter(|k| k.id != keep) {
            self.delete_key(user, &key.id).await?;
            deleted += 1;
        }
        Ok(deleted)
    }

    async fn deactivate_key(&self, user: &str, id: &str) -> Result<(), IamError> {
        let update = self
            .client
            .update_access_key()
            .user_name(user)
            .access_key_id(id)
            .status(aws_sdk_iam::types::StatusType::Inactive);
        match update.send().await {
            Ok(_) => Ok(()),
            Err(e) if no_such_entity(&e) => Ok(()),
            Err(e) => Err(classify("iam:UpdateAccessKey", &e)),
        }
    }

    async fn delete_policy(&self, user: &str) -> Result<(), IamError> {
        match self.client.delete_user_policy().user_name(user).policy_name(POLICY_NAME).send().await {
            Ok(_) => Ok(()),
            Err(e) if no_such_entity(&e) => Ok(()),
            Err(e) => Err(classify("iam:DeleteUserPolicy", &e)),
        }
    }

    /// Deletes `owner`'s user: its keys (deactivated first), its inline policy and the user.
    /// A user already gone is fine; one that is provably not `owner`'s is left alone
    /// (Ok(false)); one whose ownership cannot be proven is an error (Unprovable).
    pub async fn delete_user(&self, user: &str, owner: &Owner) -> Result<bool, IamError> {
        match self.owned(user, owner).await {
            Ok(true) => {}
            Ok(false) => return Ok(true),
            Err(IamError::Foreign { why, .. }) => {
                tracing::info!(user, why = %why, "IAM user left alone: it is not this S3Connection's");
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
        self.strip(user).await?;
        self.remove_user(user).await.map(|()| true)
    }

    async fn remove_user(&self, user: &str) -> Result<(), IamError> {
        match self.client.delete_user().user_name(user).send().await {
            Ok(_) => Ok(()),
            Err(e) if no_such_entity(&e) => Ok(()),
            Err(e) => Err(classify("iam:DeleteUser", &e)),
        }
    }

    /// deletionPolicy Retain: `owner`'s user (and its key) is left for a person, and tagged
    /// so, so that neither the sweep nor a later connection of the same name touches it.
    pub async fn release(&self, user: &str, owner: &Owner) -> Result<(), IamError> {
        match self.owned(user, owner).await {
            Ok(true) => {}
            Ok(false) | Err(IamError::Foreign { .. }) => return Ok(()),
            Err(e) => return Err(e),
        }
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        self.set_tags(user, &[(TAG_RELEASED, &now)]).await
    }

    /// The sweep's work on an orphan (a user of this installation whose S3Connection is
    /// gone): its keys and policy always go; the user too unless its tags say Retain.
    /// `tags` were read just before, in the same sweep. Returns (keys removed, user deleted).
    pub async fn clear_orphan(&self, user: &str, tags: &BTreeMap<String, String>) -> Result<(usize, bool), IamError> {
        let keys = self.strip(user).await?;
        if tags.get(TAG_DELETION_POLICY).map(String::as_str) == Some("Retain") {
            return Ok((keys, false));
        }
        self.remove_user(user).await?;
        Ok((keys, true))
    }

    /// Revokes a user of this installation whose connection no grant covers any more.
    pub async fn revoke_ours(&self, user: &str) -> Result<usize, IamError> {
        self.strip(user).await
    }
}

/// What IAM holds for a user of ours.
#[derive(Clone, Debug, PartialEq)]
pub struct Held {
    pub tags: BTreeMap<String, String>,
    pub keys: Vec<KeyInfo>,
    /// The inline policy (None: none; Null: one that is not JSON).
    pub policy: Option<Value>,
}

fn tag(key: &str, value: &str) -> Result<aws_sdk_iam::types::Tag, IamError> {
    aws_sdk_iam::types::Tag::builder().key(key).value(value).build().map_err(|e| IamError::Rejected {
        action: "iam:TagUser",
        code: "InvalidTag".into(),
        detail: e.to_string(),
    })
}

/// Decodes `%XX` escapes (IAM's policy documents are URL-encoded); anything else as is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = text.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The IAM policy the operator's own identity needs for managed credentials, limited to
/// users under `path` (and, with `boundary`, to creating users only under that boundary).
pub fn operator_policy(path: &str, boundary: Option<&str>) -> Value {
    let users = format!("arn:aws:iam::*:user{path}*");
    let mut create = json!({
        "Sid": "S3ConnectCreateUsers",
        "Effect": "Allow",
        "Action": ["iam:CreateUser", "iam:TagUser"],
        "Resource": users,
    });
    if let Some(b) = boundary {
        create["Condition"] = json!({"StringEquals": {"iam:PermissionsBoundary": b}});
    }
    json!({
        "Version": "2012-10-17",
        "Statement": [
            create,
            {
                "Sid": "S3ConnectManageUsers",
                "Effect": "Allow",
                "Action": [
                    "iam:GetUser", "iam:ListUserTags", "iam:TagUser", "iam:DeleteUser",
                    "iam:GetUserPolicy", "iam:PutUserPolicy", "iam:DeleteUserPolicy",
                    "iam:CreateAccessKey", "iam:ListAccessKeys", "iam:UpdateAccessKey", "iam:DeleteAccessKey",
                ],
                "Resource": users,
            },
            {
                // The sweep finds users whose S3Connection is gone by listing the path.
                // ListUsers has no resource-level permissions in IAM; it returns names,
                // paths and dates, never keys.
                "Sid": "S3ConnectListUsers",
                "Effect": "Allow",
                "Action": ["iam:ListUsers"],
                "Resource": "*",
            },
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_unique_per_connection_and_fit_iam() {
        assert_eq!(user_name("team-a", "cats"), "team-a.cats");
        assert_ne!(user_name("a-b", "c"), user_name("a", "b-c"));
        let long = user_name("ns", &"x".repeat(200));
        assert_eq!(long.len(), 64);
        assert_ne!(long, user_name("ns", &format!("{}y", "x".repeat(199))));
        let allowed = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
        assert!(long.chars().all(allowed) && user_name("a", "b.c-d").chars().all(allowed));
    }

    #[test]
    fn a_user_is_ours_only_with_our_installation_and_the_connections_uid() {
        let owner = Owner {
            installation: "i-1".into(),
            release: "s3connect".into(),
            namespace: "john".into(),
            name: "smith".into(),
            uid: "u-1".into(),
        };
        let tags: std::collections::BTreeMap<String, String> =
            owner.tags().iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        assert_eq!(owner.mismatch(&tags), None);
        // A person's user named john.smith: no tags at all.
        let person = owner.mismatch(&Default::default()).unwrap();
        assert!(matches!(&person, Mismatch::NotOurs(w) if w.contains("did not make it")), "{person:?}");
        // Another installation (another release) in the same account.
        let other =
            Owner { installation: "i-2".into(), release: "other".into(), ..owner.clone() }.mismatch(&tags).unwrap();
        assert!(
            matches!(&other, Mismatch::NotOurs(w) if w.contains("another s3connect installation (s3connect)")),
            "{other:?}"
        );
        // The same release under a new id (its ConfigMap made anew): unprovable, not foreign.
        let anew = Owner { installation: "i-2".into(), ..owner.clone() }.mismatch(&tags).unwrap();
        assert!(matches!(&anew, Mismatch::Unprovable(w) if w.contains("\"i-1\"")), "{anew:?}");
        // An earlier connection of the same name, or a name another namespace chose.
        let earlier = Owner { uid: "u-2".into(), ..owner.clone() }.mismatch(&tags).unwrap();
        assert!(matches!(&earlier, Mismatch::NotOurs(w) if w.contains("john/smith")), "{earlier:?}");
        // One released by deletionPolicy Retain is a person's from then on, even to its own uid.
        let mut released = tags.clone();
        released.insert(TAG_RELEASED.into(), "2026-01-01T00:00:00Z".into());
        let kept = owner.mismatch(&released).unwrap();
        assert!(matches!(&kept, Mismatch::NotOurs(w) if w.contains("Retain")), "{kept:?}");
        // Every tag fits IAM's limits for the longest names Kubernetes allows.
        let longest = Owner { namespace: "n".repeat(63), name: "c".repeat(253), ..owner };
        assert!(longest.tags().iter().all(|(k, v)| k.len() <= 128 && v.len() <= 256));
    }

    #[test]
    fn iam_error_text_names_no_account_or_identity() {
        let text = "User: arn:aws:sts::123456789012:assumed-role/s3connect/i-1 is not authorized to perform: iam:CreateAccessKey on resource: arn:aws:iam::123456789012:user/s3connect/ns.c, account 123456789012.";
        let shown = anonymous(text);
        assert!(!shown.contains("123456789012") && !shown.contains("assumed-role"), "{shown}");
        assert!(shown.contains("iam:CreateAccessKey") && shown.contains("<an ARN>"), "{shown}");
        assert_eq!(anonymous("no such entity"), "no such entity");
    }

    #[test]
    fn policy_documents_are_read_encoded_or_not() {
        assert_eq!(percent_decode("%7B%22a%22%3A1%7D"), r#"{"a":1}"#);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn the_operator_policy_names_every_call_it_makes_and_only_users_under_its_path() {
        let policy = operator_policy("/s3connect/", Some("arn:aws:iam::1:policy/b"));
        let text = policy.to_string();
        for action in [
            "iam:CreateUser",
            "iam:GetUser",
            "iam:DeleteUser",
            "iam:PutUserPolicy",
            "iam:DeleteUserPolicy",
            "iam:CreateAccessKey",
            "iam:ListAccessKeys",
            "iam:DeleteAccessKey",
            "iam:ListUserTags",
            "iam:UpdateAccessKey",
            "iam:GetUserPolicy",
            "iam:TagUser",
            "iam:ListUsers",
        ] {
            assert!(text.contains(action), "{action}");
        }
        for s in policy["Statement"].as_array().unwrap() {
            let expected = if s["Sid"] == "S3ConnectListUsers" { "*" } else { "arn:aws:iam::*:user/s3connect/*" };
            assert_eq!(s["Resource"], expected, "{s}");
        }
        assert_eq!(
            policy["Statement"][0]["Condition"]["StringEquals"]["iam:PermissionsBoundary"],
            "arn:aws:iam::1:policy/b"
        );
    }

    #[test]
    fn denials_name_the_action_and_the_way_to_fix_it() {
        let e = IamError::Denied { action: "iam:CreateAccessKey", detail: "AccessDenied: no".into() };
        let text = e.to_string();
        assert!(text.contains("iam:CreateAccessKey") && text.contains("s3connect policy --operator"));
        assert!(text.contains("statement S3ConnectManageUsers"), "{text}");
        let create = IamError::Denied { action: "iam:CreateUser", detail: "no".into() }.to_string();
        assert!(create.contains("statement S3ConnectCreateUsers"), "{create}");
        let list = IamError::Denied { action: "iam:ListUsers", detail: "no".into() }.to_string();
        assert!(list.contains("statement S3ConnectListUsers"), "{list}");
        // Every statement named exists in the policy.
        let policy = operator_policy(DEFAULT_PATH, None).to_string();
        assert!(
            policy.contains("S3ConnectCreateUsers")
                && policy.contains("S3ConnectManageUsers")
                && policy.contains("S3ConnectListUsers")
        );
        assert!(!e.is_transient() && IamError::Unavailable { action: "x", detail: "y".into() }.is_transient());
    }
}
