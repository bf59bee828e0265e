//! Everything that talks to S3: clients, the probe engine, and the pure pieces it uses
//! (uri parsing, error classification, CORS merging, policies).

pub mod client;
pub mod cors;
pub mod error;
pub mod policy;
pub mod probe;
pub mod uri;
