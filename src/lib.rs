//! s3connect: a Kubernetes operator that connects S3 buckets to the Labellerr
//! data-labelling platform and says, in status, exactly what to fix when it cannot.

pub mod api;
pub mod aws;
pub mod check;
pub mod controller;
pub mod credentials;
pub mod endpoints;
pub mod iam;
pub mod leader;
pub mod net;
pub mod platform;
pub mod s3;
pub mod telemetry;
pub mod text;
pub mod timing;
pub mod validation;

#[cfg(test)]
mod properties;
