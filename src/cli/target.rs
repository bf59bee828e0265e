//! What `check` and `policy` look at: a manifest, or the same fields as flags.

use clap::{Args, ValueEnum};
use s3connect::api::S3ConnectionSpec;
use s3connect::api::connection::{CorsMode, Usage};
use s3connect::check::{spec_from_manifest, specs_from_manifest};

/// What to check: a manifest, or the same fields as flags.
#[derive(Args)]
pub struct Target {
    /// A YAML file with S3Connections (every one is checked; other documents are
    /// skipped); `-` reads stdin.
    #[arg(short = 'f', long = "filename", conflicts_with_all = ["uri", "usage"])]
    file: Option<String>,
    /// s3://bucket/prefix/ (required unless -f is given)
    #[arg(long)]
    uri: Option<String>,
    /// Import and/or Export (repeat the flag for both).
    #[arg(long, value_enum)]
    usage: Vec<UsageArg>,
    #[arg(long, value_enum, default_value_t = CorsArg::Apply)]
    cors_mode: CorsArg,
    #[arg(long)]
    region: Option<String>,
    /// An S3-compatible endpoint, such as http://127.0.0.1:9000.
    #[arg(long)]
    endpoint: Option<String>,
    #[arg(long)]
    force_path_style: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum UsageArg {
    Import,
    Export,
}

#[derive(Clone, Copy, ValueEnum)]
enum CorsArg {
    Apply,
    Verify,
    Ignore,
}

impl Target {
    fn manifest(&self) -> Option<Result<String, String>> {
        let file = self.file.as_ref()?;
        Some(if file == "-" {
            std::io::read_to_string(std::io::stdin()).map_err(|e| format!("reading stdin: {e}"))
        } else {
            std::fs::read_to_string(file).map_err(|e| format!("reading {file}: {e}"))
        })
    }

    /// Every connection to check, by name.
    pub fn specs(&self) -> Result<Vec<(String, S3ConnectionSpec)>, String> {
        match self.manifest() {
            Some(text) => specs_from_manifest(&text?),
            None => Ok(vec![("(flags)".to_owned(), self.spec()?)]),
        }
    }

    pub fn spec(&self) -> Result<S3ConnectionSpec, String> {
        if let Some(text) = self.manifest() {
            return spec_from_manifest(&text?);
        }
        if self.uri.is_none() {
            return Err("give --uri s3://bucket/prefix/, or -f with a manifest".into());
        }
        let usage: Vec<Usage> = if self.usage.is_empty() {
            vec![Usage::Import]
        } else {
            self.usage
                .iter()
                .map(|u| if matches!(u, UsageArg::Import) { Usage::Import } else { Usage::Export })
                .collect()
        };
        let mut spec: S3ConnectionSpec = serde_json::from_value(serde_json::json!({
            "uri": self.uri.clone().unwrap_or_default(),
            "credentials": {"secretRef": {"name": "environment"}},
            "region": self.region,
            "endpoint": self.endpoint,
            "forcePathStyle": self.force_path_style,
        }))
        .map_err(|e| e.to_string())?;
        spec.usage = usage;
        spec.cors.mode = match self.cors_mode {
            CorsArg::Apply => CorsMode::Apply,
            CorsArg::Verify => CorsMode::Verify,
            CorsArg::Ignore => CorsMode::Ignore,
        };
        Ok(spec)
    }
}
