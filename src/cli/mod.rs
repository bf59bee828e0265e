//! The `s3connect` command line: one module per subcommand.

mod check;
mod crd;
mod operator;
mod policy;
mod target;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Connects S3 buckets to the Labellerr labelling platform, verifiably.
#[derive(Parser)]
#[command(name = "s3connect", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator: validate S3Connections and keep their status current.
    ///
    /// Uses the in-cluster configuration, or KUBECONFIG / ~/.kube/config outside a cluster.
    Operator(Box<operator::OperatorArgs>),
    /// Print the CustomResourceDefinitions (S3Connection, DatasetExport, Dataset,
    /// S3AccessGrant) as YAML.
    ///
    /// Install them with: s3connect crd | kubectl apply --server-side -f -
    Crd,
    /// Probe a bucket the way the operator does, outside Kubernetes.
    ///
    /// Credentials come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and (optionally)
    /// AWS_SESSION_TOKEN. Exits 0 when the connection would be Ready, 1 when not, 2 on
    /// bad input. Never changes the bucket's CORS rules unless --apply-cors is given.
    Check(check::CheckArgs),
    /// Print the least-privilege IAM policy a connection needs, as JSON; with --operator,
    /// the policy the operator's own identity needs for managed credentials.
    Policy(policy::PolicyArgs),
}

pub fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crd => crd::run(),
        Command::Policy(args) => policy::run(args),
        Command::Check(args) => check::run(args),
        Command::Operator(args) => operator::run(*args),
    }
}

pub(crate) fn usage_error(message: &str) -> ExitCode {
    eprintln!("s3connect: {message}");
    ExitCode::from(2)
}

/// One thread: the operator waits on the network almost all the time. In the 1,000-connection
/// benchmark a work-stealing pool cost about 13 % more CPU per reconcile (cross-thread
/// wake-ups) and 2-3 MiB more memory, for a time to Ready within 10 % of one thread's;
/// one thread still validates hundreds of connections a second (docs/benchmarks.md).
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime")
}
