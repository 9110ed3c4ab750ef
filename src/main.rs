use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use kube::CustomResourceExt;
use photo_policy_operator::cluster_controller::{self, ClusterOptions};
use photo_policy_operator::cluster_policy::ClusterPhotoUpdatePolicy;
use photo_policy_operator::controller::{self, Context};
use photo_policy_operator::graph::{
    EndpointOverrides, GraphClient, GraphClientOptions, RequestObserver,
};
use photo_policy_operator::leader::{self, LeaderElector};
use photo_policy_operator::metrics::{self, Metrics};
use photo_policy_operator::oneshot::{self, Mode};
use photo_policy_operator::policy::PhotoUpdatePolicy;
use photo_policy_operator::telemetry::{self, LogFormat};
use photo_policy_operator::validation;
use tokio::signal::unix::SignalKind;
use tracing::info;

/// Keeps Microsoft 365 profile photo update settings as code.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller: watch PhotoUpdatePolicy resources and keep each
    /// tenant in line. Uses the in-cluster service account, or KUBECONFIG.
    Run(RunArgs),
    /// Print the PhotoUpdatePolicy and ClusterPhotoUpdatePolicy
    /// CustomResourceDefinitions as YAML documents.
    Crd,
    /// Show what would change for the policies in a file, without writing.
    /// Exits 0 when every tenant is in sync, 2 when a tenant would change,
    /// 1 on errors. Credentials come from AZURE_CLIENT_SECRET,
    /// AZURE_CLIENT_CERTIFICATE_PATH or AZURE_FEDERATED_TOKEN_FILE, by
    /// credentials.type.
    Plan(OneShotArgs),
    /// Write the declared settings of the policies in a file and verify
    /// them with a read. Exits 0 when every tenant ends in sync, 1 on
    /// errors. Credentials come from the same variables as for plan.
    Apply(OneShotArgs),
}

#[derive(Args)]
struct GraphArgs {
    /// Sign-in host to use instead of the cloud's own, such as a Graph
    /// emulator. Plain http:// is accepted only for loopback addresses.
    #[arg(long, env = "PPO_AUTHORITY_HOST", value_name = "URL")]
    authority_host: Option<String>,
    /// Graph host to use instead of the cloud's own, such as a Graph
    /// emulator. Plain http:// is accepted only for loopback addresses.
    #[arg(long, env = "PPO_GRAPH_ENDPOINT", value_name = "URL")]
    graph_endpoint: Option<String>,
    /// PEM file with extra CA certificates to trust for the sign-in and
    /// Graph hosts, for example a TLS-intercepting proxy or a test emulator.
    #[arg(long, value_name = "FILE")]
    extra_ca_file: Option<String>,
    /// Timeout of one Graph or token request, in seconds.
    #[arg(long, default_value_t = 30, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=600))]
    request_timeout: u64,
    /// Log line format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    graph: GraphArgs,
    /// Watch only this namespace. Default: all namespaces.
    #[arg(long, env = "PPO_WATCH_NAMESPACE", value_name = "NS",
          value_parser = validation::parse_namespace)]
    namespace: Option<String>,
    /// Maximum number of policies (and tenants of cluster policies, each
    /// kind on its own) reconciled at the same time.
    #[arg(long, default_value_t = 32, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..))]
    max_concurrent_reconciles: u16,
    /// Maximum number of Graph and token requests in flight at the same
    /// time, over all tenants. A pass takes a slot only while its request is
    /// on the wire, not while it reads a Secret or writes a status.
    #[arg(long, default_value_t = 16, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..))]
    max_concurrent_graph_requests: u16,
    /// Address for /metrics, /healthz and /readyz. Port 0 picks a free port.
    #[arg(long, default_value = "0.0.0.0:8080", value_name = "ADDR")]
    metrics_bind_address: std::net::SocketAddr,
    /// Run the controller only while this replica holds a Lease, so that
    /// of several replicas only one writes.
    #[arg(long)]
    leader_election: bool,
    /// Namespace of the Lease. Default: POD_NAMESPACE, else
    /// photo-policy-system.
    #[arg(
        long,
        env = "POD_NAMESPACE",
        default_value = "photo-policy-system",
        value_name = "NS",
        value_parser = validation::parse_namespace
    )]
    leader_election_namespace: String,
    /// Name of the Lease.
    #[arg(long, default_value = "photo-policy-operator", value_name = "NAME")]
    leader_election_id: String,
    /// Namespace of the tenant credential Secrets that
    /// ClusterPhotoUpdatePolicy resources select. Without it, cluster
    /// policies are not served at all.
    #[arg(long, env = "PPO_CREDENTIALS_NAMESPACE", value_name = "NS",
          value_parser = validation::parse_namespace)]
    credentials_namespace: Option<String>,
    /// Serve only the ClusterPhotoUpdatePolicy resources with these labels
    /// (a label selector such as shard=eu), so that several operators can
    /// split them. Default: all.
    #[arg(long, value_name = "SELECTOR")]
    cluster_policy_selector: Option<String>,
}

#[derive(Args)]
struct OneShotArgs {
    #[command(flatten)]
    graph: GraphArgs,
    /// YAML or JSON file with one or more PhotoUpdatePolicy documents, a
    /// directory (its .yaml, .yml and .json files), or - for stdin. Read as
    /// `kubectl apply -f` reads it.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    file: String,
    /// How long `apply` keeps reading after a write until the new value
    /// shows up, in seconds (at most one day).
    #[arg(long, default_value_t = 60, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(0..=MAX_VERIFY_TIMEOUT_SECONDS))]
    verify_timeout: u64,
}

/// Upper bound of `--verify-timeout`, which also keeps the deadline within
/// the range of `Instant`.
const MAX_VERIFY_TIMEOUT_SECONDS: u64 = 24 * 60 * 60;

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: failed to start the async runtime: {error}");
            return ExitCode::from(oneshot::EXIT_FAILED as u8);
        }
    };
    runtime.block_on(run(cli))
}

/// Caps glibc's malloc at two arenas unless `MALLOC_ARENA_MAX` sets the
/// number. By default each thread that allocates may get an arena of its
/// own, and memory freed in one arena is not reused by the others. With two
/// arenas the peak RSS at 1,000 policies was 0.8 MiB lower (`make bench`,
/// 23.6 against 24.4 MiB), at the same convergence time.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    const M_ARENA_MAX: std::ffi::c_int = -8;
    unsafe extern "C" {
        fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
    }
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: mallopt only changes glibc's allocator settings, and it runs
    // before the process starts any other thread.
    unsafe {
        mallopt(M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

async fn run(cli: Cli) -> ExitCode {
    match dispatch(cli.command).await {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(oneshot::EXIT_FAILED as u8)
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Crd => {
            let text = format!(
                "{}---\n{}",
                serde_yaml::to_string(&PhotoUpdatePolicy::crd())?,
                serde_yaml::to_string(&ClusterPhotoUpdatePolicy::crd())?
            );
            let mut stdout = std::io::stdout().lock();
            match stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush())
            {
                // The reader stopped early, as `crd | head` does.
                Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => other.context("failed to write the CRDs to stdout")?,
            }
            Ok(0)
        }
        Command::Run(args) => {
            run_controller(args).await?;
            Ok(0)
        }
        Command::Plan(args) => one_shot(args, Mode::Plan).await,
        Command::Apply(args) => one_shot(args, Mode::Apply).await,
    }
}

async fn run_controller(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init(args.graph.log_format, "info,kube=warn");
    let metrics = Arc::new(Metrics::new());
    let address = metrics::serve(metrics.clone(), args.metrics_bind_address)
        .await
        .with_context(|| format!("failed to listen on {}", args.metrics_bind_address))?;
    info!(%address, "serving /metrics, /healthz and /readyz");
    let graph = graph_client(
        &args.graph,
        Some(metrics.clone()),
        Some(args.max_concurrent_graph_requests.into()),
    )?;
    let client = kube::Client::try_default()
        .await
        .context("failed to configure the Kubernetes client (in-cluster or KUBECONFIG)")?;
    tokio::spawn(exit_if_shutdown_hangs(graph.clone()));

    let elector = match args.leader_election {
        true => {
            let elector = LeaderElector::new(
                client.clone(),
                &args.leader_election_namespace,
                &args.leader_election_id,
                leader::default_identity(),
            );
            // A follower is ready to take over. If /readyz answered 503 until
            // it leads, a rolling update of the Deployment could never finish.
            metrics.set_ready();
            info!(identity = elector.identity(), lease = %elector.lease(), "waiting for leadership");
            if !elector.acquire_unless_stopped().await {
                info!("stopped before acquiring leadership");
                return Ok(());
            }
            info!(identity = elector.identity(), lease = %elector.lease(), "acquired leadership");
            Some(Arc::new(elector))
        }
        false => None,
    };
    let keeper = elector.clone().map(LeaderElector::keep_or_exit);

    info!(
        namespace = args.namespace.as_deref().unwrap_or("*"),
        "starting controller"
    );
    let context = Arc::new(Context::new(client, graph, metrics));
    let namespaced = controller::run(
        context.clone(),
        args.namespace,
        args.max_concurrent_reconciles,
    );
    match args.credentials_namespace {
        Some(credentials_namespace) => {
            let options = ClusterOptions {
                credentials_namespace,
                policy_selector: args.cluster_policy_selector,
                concurrency: args.max_concurrent_reconciles,
            };
            tokio::join!(namespaced, cluster_controller::run(context, options));
        }
        None => {
            info!(
                "ClusterPhotoUpdatePolicy resources are not served: --credentials-namespace \
                 is not set"
            );
            namespaced.await;
        }
    }
    info!("controller stopped");

    if let (Some(elector), Some(keeper)) = (elector, keeper) {
        keeper.abort();
        let _ = keeper.await;
        match tokio::time::timeout(Duration::from_secs(5), elector.release()).await {
            Ok(Ok(true)) => info!(identity = elector.identity(), "released leadership"),
            Ok(Ok(false)) => info!("not releasing the Lease: it has another holder or was deleted"),
            Ok(Err(error)) => tracing::warn!(%error, "releasing the Lease failed"),
            Err(_) => tracing::warn!("releasing the Lease timed out"),
        }
    }
    Ok(())
}

/// Time a stop request gives running passes (such as a write in flight)
/// before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// On SIGTERM or Ctrl-C, stops Graph requests that wait for a slot (passes
/// on the wire finish), and exits the process when a graceful stop has not
/// finished within [`SHUTDOWN_GRACE`], for example while the controller
/// still waits for a CRD that was never installed.
async fn exit_if_shutdown_hangs(graph: GraphClient) {
    let mut terminate = match tokio::signal::unix::signal(SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(error) => {
            tracing::warn!(%error, "cannot watch for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    graph.stop_waiting_requests();
    tokio::time::sleep(SHUTDOWN_GRACE).await;
    tracing::error!("graceful stop did not finish within {SHUTDOWN_GRACE:?}, exiting");
    std::process::exit(1);
}

async fn one_shot(args: OneShotArgs, mode: Mode) -> anyhow::Result<u8> {
    telemetry::init(args.graph.log_format, "warn");
    let policies = oneshot::load_policies(&args.file)?;
    let credentials = oneshot::credentials_from_env(&policies)?;
    let graph = graph_client(&args.graph, None, None)?;
    let verify = Duration::from_secs(args.verify_timeout);
    let code = oneshot::run(&graph, &policies, &credentials, mode, verify).await;
    Ok(code as u8)
}

fn graph_client(
    args: &GraphArgs,
    observer: Option<Arc<dyn RequestObserver>>,
    max_in_flight: Option<usize>,
) -> anyhow::Result<GraphClient> {
    let endpoints = EndpointOverrides::parse(
        args.authority_host.as_deref(),
        args.graph_endpoint.as_deref(),
    )?;
    let mut options = GraphClientOptions {
        endpoints,
        timeout: Duration::from_secs(args.request_timeout),
        observer,
        max_in_flight,
        ..GraphClientOptions::default()
    };
    if let Some(path) = &args.extra_ca_file {
        let pem = std::fs::read(path).with_context(|| format!("failed to read {path}"))?;
        options
            .add_pem_root_certificates(&pem)
            .with_context(|| format!("--extra-ca-file {path} cannot be used"))?;
    }
    Ok(GraphClient::new(options)?)
}
