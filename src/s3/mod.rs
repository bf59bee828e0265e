//! Everything that talks to S3: clients, the probe engine, and the pure pieces it uses
//! (uri parsing, error classification, CORS merging, policies).

pub mod client;
pub mod cors;
pub mod error;
pub mod policy;
pub mod probe;
pub mod uri;

/// What a connection does with its bucket, as the probes and the policy see it: read
/// (import: list and get) and write (export: put and delete).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    pub read: bool,
    pub write: bool,
}

/// What is done about the bucket's CORS rule: add it when missing, only check it, or
/// leave CORS alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Cors {
    #[default]
    Apply,
    Verify,
    Ignore,
}
