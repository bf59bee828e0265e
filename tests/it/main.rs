//! Integration tests against a real control plane (etcd + kube-apiserver) and a real
//! S3/IAM server. One binary, so that every test shares one build and one environment.

mod support;

/// A timer for the test it is made in: how long the test took goes to the file
/// `S3CONNECT_TEST_TIMES` names (scripts/test prints the slowest), failed or not.
#[macro_export]
macro_rules! timed {
    () => {
        $crate::support::Timer::start({
            fn here() {}
            let name = std::any::type_name_of_val(&here);
            name.strip_suffix("::here").unwrap_or(name)
        })
    };
}

mod admission;
mod browser;
mod chart;
mod cli;
mod connection;
mod crds;
mod dataset;
mod docs;
mod exactly_once;
mod export;
mod gitops;
mod image;
mod isolation;
mod launcher;
mod managed;
mod memory;
mod network;
mod operations;
mod packaging;
mod project;
mod sharding;
mod testenv;
