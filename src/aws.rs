//! aws-config's default chain on the operator's one HTTP stack (rustls + ring): the
//! environment, `AWS_PROFILE` and the shared config and credentials files (static keys,
//! `credential_process`, assume-role, SSO), web identity (IRSA), the container endpoint
//! (EKS Pod Identity, ECS), instance metadata; `AWS_REGION`, `AWS_ENDPOINT_URL(_<SERVICE>)`.

/// A loader with the default chain; `.profile_name()` and the like may be added.
pub fn config_loader() -> aws_config::ConfigLoader {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(crate::s3::client::http_client())
}
