//! Everything that talks to S3: building clients from a connection's credentials.

pub mod client;
