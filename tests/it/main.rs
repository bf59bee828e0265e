//! Integration tests against a real control plane (etcd + kube-apiserver) and a real
//! S3/IAM server. One binary, so that every test shares one build and one environment.

mod support;

mod admission;
mod browser;
mod chart;
mod cli;
mod connection;
mod crds;
mod dataset;
mod exactly_once;
mod export;
mod gitops;
mod isolation;
mod launcher;
mod managed;
mod memory;
mod network;
mod operations;
mod packaging;
mod testenv;
