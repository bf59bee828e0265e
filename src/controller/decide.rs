//! What every kind's pure `decide` shares: how a condition is named, how a platform
//! failure becomes one, and how long retries after a platform failure may grow. One
//! definition here, so that the kinds cannot drift apart on them.
//!
//! The kinds build a condition on one line (`cond(TYPE, Status::False, R::Reason, message)`)
//! from a message made just above it: what differs between two outcomes is their words, and
//! the shape around them stays short enough that a real repetition between kinds shows.

use std::time::Duration;

use crate::api::conditions::{NamedCond, Status};
use crate::platform::PlatformError;

/// The cap on retries after a platform failure.
pub const RETRY_CAP: Duration = Duration::from_secs(600);

/// A condition with one of the kind's reasons (or a ConnectionReady reason).
pub fn cond(
    type_: &'static str,
    status: Status,
    reason: impl std::fmt::Display,
    message: impl Into<String>,
) -> NamedCond {
    NamedCond::new(type_, status, reason.to_string(), message)
}

/// The condition `type_` for a platform call (`doing`) that failed.
pub fn platform_failure(type_: &'static str, doing: &str, e: &PlatformError) -> NamedCond {
    crate::controller::platform::failure(type_, doing, e).into()
}
