//! `s3connect crd`: the CustomResourceDefinitions as YAML.

use std::process::ExitCode;

pub fn run() -> ExitCode {
    print!("{}", s3connect::api::crds_yaml());
    ExitCode::SUCCESS
}
