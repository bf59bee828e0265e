//! s3connect: a Kubernetes operator that connects S3 buckets to the Labellerr
//! data-labelling platform and says, in status, exactly what to fix when it cannot.

pub mod api;
pub mod aws;
pub mod check;
pub mod controller;
pub mod endpoints;
pub mod iam;
pub mod leader;
pub mod net;
pub mod platform;
pub mod s3;
pub mod telemetry;

#[cfg(test)]
mod properties;
