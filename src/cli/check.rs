//! `s3connect check`: probe a bucket the way the operator does, outside Kubernetes.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use s3connect::check::{check, check_cors_mode};
use s3connect::s3::client::Keys;

use super::target::Target;
use super::{runtime, usage_error};

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    target: Target,
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// The most one connection's probes may take, in seconds; a store silent that long is
    /// reported unreachable.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    timeout: u64,
    /// Add the missing CORS rule (Apply mode) instead of only checking for it.
    #[arg(long)]
    apply_cors: bool,
    /// The AWS profile (shared config and credentials files) to take credentials from;
    /// AWS_PROFILE otherwise. Credentials come from the standard chain: environment,
    /// profile (static keys, credential_process, assume-role, SSO), web identity.
    #[arg(long)]
    profile: Option<String>,
    /// A PEM file of CA certificates to trust besides the system's (AWS_CA_BUNDLE otherwise).
    #[arg(long, env = "AWS_CA_BUNDLE")]
    ca_bundle: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
    Yaml,
}

pub fn run(args: CheckArgs) -> ExitCode {
    if let Err(e) = s3connect::net::trust_ca_bundle(args.ca_bundle.as_deref()) {
        return usage_error(&e);
    }
    let (targets, (keys, endpoint)) = match (args.target.specs(), check_key_variables()) {
        (Ok(s), Ok(_)) => match runtime().block_on(aws_identity(args.profile.as_deref())) {
            Ok(found) => (s, found),
            Err(e) => return usage_error(&e),
        },
        (Err(e), _) | (_, Err(e)) => return usage_error(&e),
    };
    let deadline = std::time::Duration::from_secs(args.timeout);
    let several = targets.len() > 1;
    let mut results = Vec::new();
    let mut code = 0u8;
    for (name, mut spec) in targets {
        spec.cors.mode = check_cors_mode(spec.cors.mode, args.apply_cors);
        // The manifest's (or --endpoint's) endpoint wins over AWS_ENDPOINT_URL(_S3).
        if spec.endpoint.is_none() {
            spec.endpoint.clone_from(&endpoint);
        }
        let checked = runtime().block_on(with_progress(&spec.uri, check(&spec, &keys, deadline)));
        // The worst outcome decides: 2 bad input, 1 not ready, 0 ready.
        code = code.max(if checked.bad_input() { 2 } else { u8::from(!checked.ready()) });
        match args.output {
            Output::Table if several => print!("S3Connection {name}:\n{}\n", checked.to_table()),
            Output::Table => print!("{}", checked.to_table()),
            _ => {
                let mut v = checked.to_json();
                v["name"] = serde_json::json!(name);
                results.push(v);
            }
        }
    }
    let doc = if several { serde_json::Value::Array(results) } else { results.pop().unwrap_or_default() };
    match args.output {
        Output::Table => {}
        Output::Json => println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default()),
        Output::Yaml => print!("{}", serde_saphyr::to_string(&doc).unwrap_or_default()),
    }
    ExitCode::from(code)
}

/// The keys `check` uses, from the environment; a value that cannot be a credential is
/// bad input (exit 2), named by its variable and never echoed.
/// Credentials from aws-config's default chain (with `profile` if given), and the S3
/// endpoint the environment or profile names (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`,
/// `endpoint_url`).
async fn aws_identity(profile: Option<&str>) -> Result<(Keys, Option<String>), String> {
    use aws_credential_types::provider::ProvideCredentials;
    let mut loader = s3connect::aws::config_loader();
    if let Some(p) = profile {
        loader = loader.profile_name(p);
    }
    let config = loader.load().await;
    // FIPS and dual-stack endpoints as the AWS CLI takes them (AWS_USE_FIPS_ENDPOINT,
    // use_fips_endpoint in the profile, and the dual-stack pair). The first and only
    // setting: nothing has made an S3 client yet.
    let _ = s3connect::s3::client::set_variants(s3connect::s3::client::Variants {
        fips: config.use_fips().unwrap_or(false),
        dual_stack: config.use_dual_stack().unwrap_or(false),
    });
    let none = || {
        "no AWS credentials were found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or name a profile of ~/.aws/config with --profile or AWS_PROFILE".to_owned()
    };
    let provider = config.credentials_provider().ok_or_else(none)?;
    let credentials = provider.provide_credentials().await.map_err(|e| {
        // Each cause's own words, once (the chain repeats itself), never a response dump.
        let mut causes: Vec<String> = Vec::new();
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(cause) = next {
            let text = cause.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
            if !causes.iter().any(|c| c.contains(&text)) {
                causes.push(text);
            }
            next = cause.source();
        }
        let why: String = causes.join(": ").chars().take(400).collect();
        format!("{} ({})", none(), s3connect::api::conditions::printable(&why))
    })?;
    let keys = Keys {
        access_key_id: credentials.access_key_id().to_owned(),
        secret_access_key: credentials.secret_access_key().to_owned(),
        session_token: credentials.session_token().map(str::to_owned),
    };
    let s3_endpoint = std::env::var("AWS_ENDPOINT_URL_S3").ok().filter(|e| !e.is_empty());
    Ok((keys, s3_endpoint.or_else(|| config.endpoint_url().map(str::to_owned))))
}

/// Key variables that are set must look like keys: one pasted with a line break or a
/// control character is refused naming the variable (never its value).
fn check_key_variables() -> Result<(), String> {
    use s3connect::credentials::{BadValue, credential_text};
    use std::os::unix::ffi::OsStrExt;
    for k in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
        if let Some(Err(BadValue::Invalid)) = std::env::var_os(k).map(|v| credential_text(v.as_bytes())) {
            return Err(format!(
                "{k} has characters no credential has (a control character, a line break or space inside it, or non-ASCII): set it again, exactly as issued"
            ));
        }
    }
    Ok(())
}

/// Runs `work`, saying on stderr that it is still at it every 2 s, so that a slow store is
/// not 20 s of silence.
async fn with_progress<F: std::future::Future>(uri: &str, work: F) -> F::Output {
    let started = std::time::Instant::now();
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return out,
            () = tokio::time::sleep(std::time::Duration::from_secs(2)) => {
                eprintln!("s3connect: still probing {uri} ({} s)", started.elapsed().as_secs());
            }
        }
    }
}
