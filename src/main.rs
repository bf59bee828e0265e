//! The `s3connect` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Connects S3 buckets to the Labellerr labelling platform, verifiably.
#[derive(Parser)]
#[command(name = "s3connect", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions (S3Connection, DatasetExport) as YAML.
    ///
    /// Install them with: s3connect crd | kubectl apply --server-side -f -
    Crd,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", s3connect::api::crds_yaml());
            ExitCode::SUCCESS
        }
    }
}
