//! `s3connect operator`: run the controllers.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use s3connect::controller::{self, Context};
use s3connect::endpoints::{AWS_DEFAULTS, AllowList};
use s3connect::telemetry::{self, LogFormat};

use super::runtime;

#[derive(Args)]
pub struct OperatorArgs {
    /// Endpoint patterns (comma-separated) that spec.endpoint may use; `*` matches within
    /// one DNS label or port. Replaces the AWS defaults, so list those too if you want them.
    #[arg(long, env = "S3CONNECT_ALLOWED_ENDPOINTS", value_delimiter = ',', default_values_t = AWS_DEFAULTS.iter().map(|s| s.to_string()).collect::<Vec<_>>())]
    allowed_endpoints: Vec<String>,
    /// Base URL of the Labellerr API, for connections with spec.platform and DatasetExports.
    #[arg(long, env = "S3CONNECT_PLATFORM_URL", default_value = s3connect::platform::DEFAULT_URL)]
    platform_url: String,
    /// How long a platform call that reads, tests or deletes may take (seconds); such calls
    /// are retried.
    #[arg(long, env = "S3CONNECT_PLATFORM_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    platform_timeout: u64,
    /// How long the platform may take to accept a create (a registration, an export), in
    /// seconds. A create is never repeated once sent: past this its outcome is unknown, a
    /// registration is looked up by name and an export waits for a person.
    #[arg(long, env = "S3CONNECT_PLATFORM_CREATE_TIMEOUT", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3600))]
    platform_create_timeout: u64,
    /// Platform calls one namespace's objects may make a minute (a burst of as many after a
    /// quiet minute); the rest wait their turn, so that one team's burst cannot spend the
    /// platform's rate limits for every team.
    #[arg(long, env = "S3CONNECT_PLATFORM_CALLS_PER_MINUTE", default_value_t = 600, value_parser = clap::value_parser!(u32).range(1..))]
    platform_calls_per_minute: u32,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "S3CONNECT_NAMESPACE")]
    namespace: Option<String>,
    /// Namespaces (comma-separated) this instance leaves alone, for example ones another
    /// instance serves with --namespace.
    #[arg(long, env = "S3CONNECT_IGNORE_NAMESPACES", value_delimiter = ',')]
    ignore_namespaces: Vec<String>,
    /// Validations (and platform calls) that start at once. One that waits on a slow
    /// store gives its turn up after 2 s, so a hung endpoint cannot hold the others back.
    #[arg(long, env = "S3CONNECT_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    /// Removed: fairness is work-conserving (a namespace alone uses every start permit; when
    /// several wait, the one with the fewest in flight goes next). Accepted and ignored,
    /// with a warning, so that existing installs keep starting.
    #[arg(long, env = "S3CONNECT_NAMESPACE_CONCURRENCY", hide = true)]
    namespace_concurrency: Option<u16>,
    /// The most one validation may take, retries included (seconds); a store that has not
    /// answered by then is reported unreachable.
    #[arg(long, env = "S3CONNECT_VALIDATION_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    validation_timeout: u64,
    /// How long a Ready connection stays Ready (with Reconciling=True) while its
    /// validations fail only for reasons that clear by themselves: S3 5xx, throttling, an
    /// unreachable store (seconds).
    #[arg(long, env = "S3CONNECT_TRANSIENT_GRACE", default_value_t = 300)]
    transient_grace: u64,
    /// How long a Ready connection stays Ready while its store answers nothing at all
    /// (every request refused or timed out; seconds): a store that is down is not a
    /// sporadic error, and the labelling team must not see Ready while every upload fails.
    #[arg(long, env = "S3CONNECT_UNREACHABLE_GRACE", default_value_t = 60)]
    unreachable_grace: u64,
    /// The least time between two validations of one connection that no spec change asked
    /// for (new keys in its Secret, a requested-at annotation), in seconds: a tenant cannot
    /// make the operator probe S3 or call the platform faster than this.
    #[arg(long, env = "S3CONNECT_MIN_VALIDATION_SPACING", default_value_t = 5)]
    min_validation_spacing: u64,
    /// The first retry after a failure (seconds); each further one waits twice as long, up
    /// to a cap of the failure's kind.
    #[arg(long, env = "S3CONNECT_RETRY_BASE", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    retry_base: u64,
    /// How long after a connection is created a missing Secret is waited for, as External
    /// Secrets or Sealed Secrets may create it a moment later (seconds): Reconciling until
    /// then, Stalled after.
    #[arg(long, env = "S3CONNECT_SECRET_GRACE", default_value_t = 120)]
    secret_grace: u64,
    /// Manage credentials (spec.credentials.managed): make IAM users and keys for the
    /// connections that an S3AccessGrant covers, with the operator's own AWS identity from
    /// the standard chain (IRSA, EKS Pod Identity, environment). Off by default.
    #[arg(long, env = "S3CONNECT_MANAGED_CREDENTIALS")]
    managed_credentials: bool,
    /// Removed: grants replaced the global bucket list. Set, it stops the operator with
    /// the upgrade note, so that no install silently changes who may mint keys.
    #[arg(long, env = "S3CONNECT_MANAGED_BUCKETS", hide = true)]
    managed_buckets: Option<String>,
    /// This installation's name (the Helm release): with an id the operator makes once
    /// (ConfigMap `<name>-installation` in the operator's namespace), it tags every IAM
    /// user, so that installations sharing an AWS account never touch each other's users.
    #[arg(long, env = "S3CONNECT_INSTALLATION", default_value = "s3connect", value_parser = installation_name)]
    installation: String,
    /// The least time between two access keys made for one connection, whatever asks for
    /// them (a rotation asked for with the s3connect.io/rotate-keys-at annotation, the key
    /// Secret deleted), measured from IAM's own key dates (seconds).
    #[arg(long, env = "S3CONNECT_MIN_ROTATION_INTERVAL", default_value_t = 3600)]
    min_rotation_interval: u64,
    /// IAM writes one namespace's connections may make per minute (a burst of as many after
    /// a quiet minute); the rest wait, with IamWritesSpaced.
    #[arg(long, env = "S3CONNECT_IAM_WRITES_PER_MINUTE", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..))]
    iam_writes_per_minute: u32,
    /// The least time between two changes of one connection's IAM policy (seconds).
    #[arg(long, env = "S3CONNECT_POLICY_CHANGE_SPACING", default_value_t = 60)]
    policy_change_spacing: u64,
    /// With managed credentials, check at start that the chart's admission policy confines
    /// the operator's Secret writes to the Secrets it owns (a dry-run write of another must
    /// be refused), and refuse to manage credentials otherwise.
    #[arg(long, env = "S3CONNECT_REQUIRE_ADMISSION_POLICY", default_value_t = true, action = clap::ArgAction::Set)]
    require_admission_policy: bool,
    /// How often the operator lists its IAM users to revoke what no S3Connection or grant
    /// stands behind any more (a finalizer stripped, a grant or namespace label removed
    /// while a connection was not reconciled), in seconds; also once at start.
    #[arg(long, env = "S3CONNECT_MANAGED_SWEEP_INTERVAL", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    managed_sweep_interval: u64,
    /// The most S3Connections with managed credentials (IAM users) one namespace may have;
    /// the newest beyond it wait with ManagedQuotaExceeded.
    #[arg(long, env = "S3CONNECT_MAX_MANAGED_PER_NAMESPACE", default_value_t = 25, value_parser = clap::value_parser!(u32).range(1..))]
    max_managed_per_namespace: u32,
    /// The IAM path managed users are created under (and the only one the operator touches).
    #[arg(long, env = "S3CONNECT_MANAGED_IAM_PATH", default_value = s3connect::iam::DEFAULT_PATH, value_parser = iam_path)]
    managed_iam_path: String,
    /// A permissions boundary (policy ARN) every managed user is created with.
    #[arg(long, env = "S3CONNECT_MANAGED_PERMISSIONS_BOUNDARY")]
    managed_permissions_boundary: Option<String>,
    /// A PEM file of CA certificates to trust besides the system's, for S3, IAM and the
    /// platform API (a private CA in front of an S3-compatible store, a TLS-inspecting
    /// proxy). HTTPS_PROXY, HTTP_PROXY and NO_PROXY are followed as usual.
    #[arg(long, env = "S3CONNECT_CA_BUNDLE")]
    ca_bundle: Option<std::path::PathBuf>,
    /// Reach buckets on AWS through S3's FIPS endpoints (`s3-fips.<region>.amazonaws.com`),
    /// as the AWS CLI's `use_fips_endpoint`. Connections with `spec.endpoint` use it as given.
    #[arg(long, env = "AWS_USE_FIPS_ENDPOINT", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false)]
    use_fips_endpoint: bool,
    /// Reach buckets on AWS through S3's dual-stack (IPv4 and IPv6) endpoints, as the AWS
    /// CLI's `use_dualstack_endpoint`. Connections with `spec.endpoint` use it as given.
    #[arg(long, env = "AWS_USE_DUALSTACK_ENDPOINT", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false)]
    use_dualstack_endpoint: bool,
    #[arg(long, env = "S3CONNECT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Per-object readiness series (`s3connect_ready{namespace,name,...}`), which let an
    /// alert name the object but also show every tenant's object names to whoever can
    /// scrape the metrics port.
    #[arg(long, env = "S3CONNECT_PER_OBJECT_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    per_object_metrics: bool,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, env = "S3CONNECT_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: std::net::SocketAddr,
    /// Where /healthz and /readyz are served apart from the metrics (the chart's probes use
    /// it), so that whatever crowds the metrics port cannot fail a probe. Unset: only on
    /// the metrics address.
    #[arg(long, env = "S3CONNECT_HEALTH_ADDR")]
    health_addr: Option<std::net::SocketAddr>,
    /// Serve only the objects whose labels match this selector (Flux's flag of the same
    /// name), so that several installations split the objects between them: shards with
    /// `s3connect.io/shard=<name>` and a main one with `!s3connect.io/shard`. Every kind's
    /// watch honours it; what an object refers to (its Secret, connection, datasets) is read
    /// whatever its labels. A selector the API server refuses stops the operator at start.
    #[arg(long, env = "S3CONNECT_WATCH_LABEL_SELECTOR")]
    watch_label_selector: Option<String>,
    /// Whether this instance does the installation's cluster-wide work: the S3AccessGrants'
    /// status and the managed-credentials sweep of IAM. With shards exactly one instance
    /// does (the chart's main one); the others run with --cluster-wide=false.
    #[arg(long, env = "S3CONNECT_CLUSTER_WIDE", default_value_t = true, action = clap::ArgAction::Set)]
    cluster_wide: bool,
    /// Reconcile only while holding a Lease, so that replicas take turns.
    #[arg(long, env = "S3CONNECT_LEADER_ELECTION")]
    leader_election: bool,
    /// Namespace of the Lease (in a cluster: the operator's own, from POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// The Lease's name. Left at its default with --watch-label-selector, it gets a suffix
    /// of the selector's hash, so that each shard elects its own leader.
    #[arg(long, env = "S3CONNECT_LEASE_NAME", default_value = DEFAULT_LEASE)]
    lease_name: String,
    /// How long a lease lasts without renewal (seconds); a standby takes over after that.
    #[arg(long, env = "S3CONNECT_LEASE_DURATION", default_value_t = 15)]
    lease_duration: u64,
}

const DEFAULT_LEASE: &str = "s3connect-leader";

/// The Lease a replica takes: the one named, or with a selector and the default name, one
/// per selector (shards that share a Lease would take turns instead of all serving).
fn lease_name(named: &str, selector: Option<&str>) -> String {
    match selector.map(str::trim).filter(|s| !s.is_empty()) {
        Some(selector) if named == DEFAULT_LEASE => {
            format!("{DEFAULT_LEASE}-{}", s3connect::text::short_hash(selector))
        }
        _ => named.to_owned(),
    }
}

pub fn run(args: OperatorArgs) -> ExitCode {
    telemetry::init(args.log_format);
    if let Err(e) = s3connect::net::trust_ca_bundle(args.ca_bundle.as_deref()) {
        tracing::error!(error = %e, "cannot use --ca-bundle");
        return ExitCode::FAILURE;
    }
    let variants =
        s3connect::s3::client::Variants { fips: args.use_fips_endpoint, dual_stack: args.use_dualstack_endpoint };
    if s3connect::s3::client::set_variants(variants).is_err() {
        tracing::error!("the S3 endpoint variants were set before the operator started");
        return ExitCode::FAILURE;
    }
    runtime().block_on(operator(args))
}

/// An IAM path of the operator's own: `/` + segments + `/`, of IAM's characters. `/` itself
/// is refused: every person's user lives there, and the path is the first thing that keeps
/// the operator away from users it did not make.
fn iam_path(text: &str) -> Result<String, String> {
    let ok = text.starts_with('/')
        && text.ends_with('/')
        && text.len() > 1
        && text.len() <= 512
        && !text.contains("//")
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"/+=,.@_-".contains(&b));
    if ok {
        Ok(text.to_owned())
    } else {
        Err("the IAM path must be a dedicated one that starts and ends with /, for example /s3connect/ (never / itself)".into())
    }
}

/// An installation's name: a DNS label, as it names a ConfigMap and an IAM tag.
fn installation_name(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 63
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-');
    if ok {
        Ok(text.to_owned())
    } else {
        Err("an installation name is up to 63 lowercase letters, digits and hyphens".into())
    }
}

/// The Kubernetes client. HTTPS_PROXY is for S3, IAM and the platform API: the API server
/// is reached directly (as in a cluster, where kube never reads the proxy variables) unless
/// the kubeconfig names a proxy-url of its own.
async fn kube_client() -> Result<kube::Client, kube::Error> {
    let mut config = kube::Config::infer().await.map_err(kube::Error::InferConfig)?;
    let from_env = ["HTTPS_PROXY", "https_proxy"].iter().find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
    if let (Some(proxy), Some(env)) = (&config.proxy_url, from_env)
        && proxy.to_string().trim_end_matches('/') == env.trim_end_matches('/')
    {
        config.proxy_url = None;
    }
    kube::Client::try_from(config)
}

async fn operator(args: OperatorArgs) -> ExitCode {
    let client = match kube_client().await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no Kubernetes configuration: run in a cluster or set KUBECONFIG");
            return ExitCode::FAILURE;
        }
    };
    if args.namespace_concurrency.is_some() {
        tracing::warn!(
            "--namespace-concurrency (S3CONNECT_NAMESPACE_CONCURRENCY) is ignored: a namespace alone uses every start permit, and when several wait the one with the fewest in flight goes next"
        );
    }
    s3connect::timing::set_retry_base(std::time::Duration::from_secs(args.retry_base));
    s3connect::telemetry::metrics::METRICS
        .hide_objects
        .store(!args.per_object_metrics, std::sync::atomic::Ordering::Relaxed);
    let allowed = AllowList::new(args.allowed_endpoints);
    // Every connection the process makes skips the internal addresses of names a tenant
    // may have chosen (see `endpoints`).
    allowed.clone().screen_connections();
    let config = controller::Config {
        allowed_endpoints: allowed.clone(),
        label_selector: args.watch_label_selector.clone().filter(|s| !s.trim().is_empty()),
        cluster_wide: args.cluster_wide,
        concurrency: args.concurrency,
        validation_timeout: std::time::Duration::from_secs(args.validation_timeout),
        transient_grace: std::time::Duration::from_secs(args.transient_grace),
        unreachable_grace: std::time::Duration::from_secs(args.unreachable_grace.min(args.transient_grace)),
        min_validation_spacing: std::time::Duration::from_secs(args.min_validation_spacing),
        secret_grace: std::time::Duration::from_secs(args.secret_grace),
        namespace: args.namespace,
        ignore_namespaces: args.ignore_namespaces,
        managed: None,
    };
    let mut config = config;
    // The API server's own parser judges the selector: one that it refuses would otherwise
    // fail every watch, over and over, with nothing served.
    if let Some(selector) = &config.label_selector {
        let probe = controller::scoped_api::<s3connect::api::S3Connection>(&client, config.namespace.as_deref());
        if let Err(e) = probe.list_metadata(&kube::api::ListParams::default().labels(selector).limit(1)).await {
            tracing::error!(selector = %selector, error = %e, "--watch-label-selector (S3CONNECT_WATCH_LABEL_SELECTOR) was refused: write it as kubectl's -l takes it, e.g. s3connect.io/shard=a or !s3connect.io/shard");
            return ExitCode::FAILURE;
        }
    }
    if args.managed_buckets.as_deref().is_some_and(|b| !b.trim().is_empty()) {
        tracing::error!(
            "--managed-buckets (S3CONNECT_MANAGED_BUCKETS, Helm value managedCredentials.buckets) was removed: a cluster admin now grants buckets per namespace with S3AccessGrant objects (Helm value managedCredentials.grants), and --managed-credentials (managedCredentials.enabled) switches managed credentials on. Create the grants, then unset it."
        );
        return ExitCode::FAILURE;
    }
    if args.managed_credentials {
        use controller::connection::managed::{Managed, installation};
        if args.require_admission_policy {
            let probe_in = config.namespace.as_deref().unwrap_or(&args.lease_namespace);
            if let Err(why) = controller::connection::managed::admission_enforced(&client, probe_in).await {
                tracing::error!(error = %why, "managed credentials are not switched on");
                return ExitCode::FAILURE;
            }
        }
        let iam = s3connect::iam::Iam::from_environment(args.managed_iam_path, args.managed_permissions_boundary).await;
        let installation = match installation(&client, &args.lease_namespace, &args.installation, &iam).await {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(error = %e, "cannot read or make this installation's id (the operator needs get, create and delete on ConfigMaps in its own namespace, and iam:ListUsers)");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(path = iam.path(), installation = %installation.release, "managed credentials enabled: S3AccessGrants decide what each namespace may obtain");
        config.managed = Some(Managed {
            iam,
            installation,
            min_rotation_interval: std::time::Duration::from_secs(args.min_rotation_interval),
            max_per_namespace: args.max_managed_per_namespace,
            budget: std::sync::Arc::new(s3connect::timing::Budget::new(
                args.iam_writes_per_minute,
                std::time::Duration::from_secs(args.policy_change_spacing),
            )),
            sweep_interval: std::time::Duration::from_secs(args.managed_sweep_interval),
        });
    }
    tracing::info!(
        allowed_endpoints = %config.allowed_endpoints,
        namespace = config.namespace.as_deref().unwrap_or("(all)"),
        "s3connect operator starting"
    );
    let timeouts = s3connect::platform::Timeouts {
        call: std::time::Duration::from_secs(args.platform_timeout),
        create: std::time::Duration::from_secs(args.platform_create_timeout),
    };
    let platform = match s3connect::platform::Client::with_timeouts(&args.platform_url, timeouts) {
        Ok(p) => p.with_namespace_budget(args.platform_calls_per_minute),
        Err(e) => {
            tracing::error!(error = %e, "cannot set up the platform client");
            return ExitCode::FAILURE;
        }
    };
    let instance = std::env::var("POD_NAME").ok();
    let metrics_addr = args.metrics_addr;
    if let Some(health_addr) = args.health_addr {
        tokio::spawn(async move {
            if let Err(e) = s3connect::telemetry::serve(health_addr, s3connect::telemetry::Serves::Health).await {
                tracing::error!(health_addr = %health_addr, error = %e, "cannot serve health");
            }
        });
    }
    tokio::spawn(async move {
        if let Err(e) = s3connect::telemetry::serve(metrics_addr, s3connect::telemetry::Serves::All).await {
            tracing::error!(addr = %metrics_addr, error = %e, "cannot serve metrics and health");
        }
    });
    let metrics = &s3connect::telemetry::metrics::METRICS;
    metrics.serving.store(true, std::sync::atomic::Ordering::Relaxed);
    let lease = args.leader_election.then(|| s3connect::leader::Settings {
        namespace: args.lease_namespace.clone(),
        name: lease_name(&args.lease_name, args.watch_label_selector.as_deref()),
        identity: instance.clone().unwrap_or_else(|| format!("s3connect-{}", s3connect::platform::uuid4())),
        lease_duration: std::time::Duration::from_secs(args.lease_duration.max(2)),
    });
    // Without leader election this instance does the work: it is the leader.
    metrics.leader.store(lease.is_none(), std::sync::atomic::Ordering::Relaxed);
    let ctx = Arc::new(Context::new(client.clone(), platform, config, instance));
    if let Some(lease) = &lease {
        tokio::select! {
            () = s3connect::leader::acquire(&client, lease) => {}
            () = shutdown_signal() => {
                tracing::info!("s3connect operator stopped while waiting for leadership");
                return ExitCode::SUCCESS;
            }
        }
        metrics.leader.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    // Both controllers stop on SIGTERM/SIGINT (each listens for the signal) and finish
    // what is in flight; a reconcile stuck on an unreachable server must not keep the
    // process up past the deadline, so that a rollout never waits on it.
    let controllers = async {
        tokio::join!(
            controller::connection::run(ctx.clone()),
            controller::export::run(ctx.clone()),
            controller::dataset::run(ctx.clone()),
            controller::project::run(ctx)
        );
    };
    let deadline = async {
        shutdown_signal().await;
        tokio::time::sleep(SHUTDOWN_DEADLINE).await;
    };
    let lost = async {
        match &lease {
            Some(lease) => s3connect::leader::keep(&client, lease).await,
            None => std::future::pending().await,
        }
    };
    let code = tokio::select! {
        () = controllers => {
            tracing::info!("s3connect operator stopped");
            ExitCode::SUCCESS
        }
        () = deadline => {
            tracing::warn!(
                deadline_s = SHUTDOWN_DEADLINE.as_secs(),
                "s3connect operator stopped before in-flight reconciles finished: they did not finish in time"
            );
            ExitCode::SUCCESS
        }
        () = lost => {
            tracing::error!("lost the leader lease: exiting so that only the new leader reconciles");
            return ExitCode::FAILURE;
        }
    };
    if let Some(lease) = &lease {
        s3connect::leader::release(&client, lease).await;
    }
    code
}

const SHUTDOWN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(15);

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shards_left_at_the_default_lease_each_get_their_own() {
        let a = super::lease_name(super::DEFAULT_LEASE, Some("s3connect.io/shard=a"));
        let b = super::lease_name(super::DEFAULT_LEASE, Some("s3connect.io/shard=b"));
        assert!(a.starts_with("s3connect-leader-") && a != b, "{a} {b}");
        assert_eq!(super::lease_name(super::DEFAULT_LEASE, None), "s3connect-leader");
        assert_eq!(super::lease_name("mine", Some("s3connect.io/shard=a")), "mine", "a name given is kept");
    }
}
