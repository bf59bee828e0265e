//! The S3 actions a connection needs and the least-privilege IAM policy that grants them,
//! scoped to the bucket and prefix. `s3connect policy` prints it; status carries the part
//! that would fix every denied action.

use serde_json::{Value, json};

use super::uri::Location;
use super::{Access, Cors};

/// An S3 action the operator probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    GetBucketLocation,
    ListBucket,
    GetObject,
    GetBucketCors,
    PutBucketCors,
    PutObject,
    DeleteObject,
}

impl Action {
    /// The IAM action name.
    pub fn iam(self) -> &'static str {
        match self {
            Action::GetBucketLocation => "s3:GetBucketLocation",
            Action::ListBucket => "s3:ListBucket",
            Action::GetObject => "s3:GetObject",
            Action::GetBucketCors => "s3:GetBucketCORS",
            Action::PutBucketCors => "s3:PutBucketCORS",
            Action::PutObject => "s3:PutObject",
            Action::DeleteObject => "s3:DeleteObject",
        }
    }

    fn on_objects(self) -> bool {
        matches!(self, Action::GetObject | Action::PutObject | Action::DeleteObject)
    }
}

/// The actions `access` needs, plus what the operator itself needs for `cors` with the same
/// credentials, in probe order.
pub fn required(access: Access, cors: Cors) -> Vec<Action> {
    let (import, export) = (access.read, access.write);
    let mut actions = vec![Action::GetBucketLocation, Action::ListBucket];
    if import {
        actions.push(Action::GetObject);
    }
    match cors {
        Cors::Apply => actions.extend([Action::GetBucketCors, Action::PutBucketCors]),
        Cors::Verify => actions.push(Action::GetBucketCors),
        Cors::Ignore => {}
    }
    if export {
        actions.extend([Action::PutObject, Action::DeleteObject]);
    }
    actions
}

/// An IAM policy document allowing exactly `actions` on `location`. Bucket-level actions
/// go on the bucket ARN, object actions on `bucket/prefix/*`, and listing is limited to
/// the prefix with an `s3:prefix` condition.
pub fn policy(location: &Location, region: Option<&str>, actions: &[Action]) -> Value {
    let mut statements = Vec::new();
    let bucket_level: Vec<_> =
        actions.iter().filter(|a| !a.on_objects() && **a != Action::ListBucket).map(|a| a.iam()).collect();
    if !bucket_level.is_empty() {
        statements.push(json!({
            "Sid": "S3ConnectBucket",
            "Effect": "Allow",
            "Action": bucket_level,
            "Resource": location.bucket_arn(region),
        }));
    }
    if actions.contains(&Action::ListBucket) {
        let mut list = json!({
            "Sid": "S3ConnectList",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": location.bucket_arn(region),
        });
        if !location.prefix.is_empty() {
            list["Condition"] =
                json!({"StringLike": {"s3:prefix": [format!("{}*", super::uri::iam_literal(&location.prefix))]}});
        }
        statements.push(list);
    }
    let objects: Vec<_> = actions.iter().filter(|a| a.on_objects()).map(|a| a.iam()).collect();
    if !objects.is_empty() {
        statements.push(json!({
            "Sid": "S3ConnectObjects",
            "Effect": "Allow",
            "Action": objects,
            "Resource": location.objects_arn(region),
        }));
    }
    json!({"Version": "2012-10-17", "Statement": statements})
}

#[cfg(test)]
mod tests {
    use super::*;
    const READ: Access = Access { read: true, write: false };
    const WRITE: Access = Access { read: false, write: true };

    fn loc(prefix: &str) -> Location {
        Location { bucket: "data".into(), prefix: prefix.into() }
    }

    #[test]
    fn usage_and_cors_mode_decide_the_actions() {
        use Action::*;
        assert_eq!(
            required(READ, Cors::Apply),
            [GetBucketLocation, ListBucket, GetObject, GetBucketCors, PutBucketCors]
        );
        assert_eq!(required(READ, Cors::Verify), [GetBucketLocation, ListBucket, GetObject, GetBucketCors]);
        assert_eq!(required(WRITE, Cors::Ignore), [GetBucketLocation, ListBucket, PutObject, DeleteObject]);
        assert_eq!(required(Access { read: true, write: true }, Cors::Apply).len(), 7);
    }

    #[test]
    fn import_policy_scopes_objects_with_the_slash_star_and_listing_with_the_prefix() {
        let p = policy(&loc("images/"), None, &required(READ, Cors::Apply));
        assert_eq!(
            p,
            json!({"Version": "2012-10-17", "Statement": [
                {"Sid": "S3ConnectBucket", "Effect": "Allow",
                 "Action": ["s3:GetBucketLocation", "s3:GetBucketCORS", "s3:PutBucketCORS"],
                 "Resource": "arn:aws:s3:::data"},
                {"Sid": "S3ConnectList", "Effect": "Allow", "Action": ["s3:ListBucket"],
                 "Resource": "arn:aws:s3:::data",
                 "Condition": {"StringLike": {"s3:prefix": ["images/*"]}}},
                {"Sid": "S3ConnectObjects", "Effect": "Allow", "Action": ["s3:GetObject"],
                 "Resource": "arn:aws:s3:::data/images/*"},
            ]})
        );
    }

    #[test]
    fn a_whole_bucket_lists_without_a_condition() {
        let p = policy(&loc(""), None, &[Action::ListBucket]);
        assert_eq!(p["Statement"][0].get("Condition"), None);
        assert_eq!(p["Statement"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn only_the_given_actions_appear() {
        let p = policy(&loc("p/"), None, &[Action::PutObject]);
        assert_eq!(
            p["Statement"],
            json!([{"Sid": "S3ConnectObjects", "Effect": "Allow", "Action": ["s3:PutObject"], "Resource": "arn:aws:s3:::data/p/*"}])
        );
        assert_eq!(policy(&loc("p/"), None, &[])["Statement"], json!([]));
    }
}
