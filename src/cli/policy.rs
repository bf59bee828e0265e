//! `s3connect policy`: the least-privilege IAM policy of a connection, or the operator's own.

use std::process::ExitCode;

use clap::Args;
use s3connect::validation::least_privilege;

use super::target::Target;
use super::usage_error;

#[derive(Args)]
pub struct PolicyArgs {
    #[command(flatten)]
    target: Target,
    /// Print the operator's own policy for managed credentials instead.
    #[arg(long, conflicts_with_all = ["file", "uri", "usage"])]
    operator: bool,
    /// With --operator: the IAM path managed users are created under.
    #[arg(long, default_value = s3connect::iam::DEFAULT_PATH, requires = "operator")]
    iam_path: String,
    /// With --operator: the permissions boundary managed users are created with.
    #[arg(long, requires = "operator")]
    permissions_boundary: Option<String>,
}

pub fn run(args: PolicyArgs) -> ExitCode {
    if args.operator {
        let policy = s3connect::iam::operator_policy(&args.iam_path, args.permissions_boundary.as_deref());
        println!("{}", serde_json::to_string_pretty(&policy).expect("a policy serialises"));
        return ExitCode::SUCCESS;
    }
    match args.target.spec().and_then(|s| least_privilege(&s)) {
        Ok(policy) => {
            println!("{}", serde_json::to_string_pretty(&policy).expect("a policy serialises"));
            ExitCode::SUCCESS
        }
        Err(e) => usage_error(&e),
    }
}
