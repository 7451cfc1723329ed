//! `burrowd`: serve the control plane, or administer its data directory.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use burrow_proto::app_origin::AppsUrl;
use burrow_server::{RelayConfig, RelayMode, ServerConfig, Timing};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "burrowd",
    version,
    about = "Burrow's control plane: API, signaling broker, TURN relay"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API, the signaling broker and (by default) the embedded relay.
    Serve(ServeArgs),
    /// Manage users and workspaces, read the audit log.
    Admin(AdminArgs),
    /// Run everything on this host: burrowd with its embedded relay, a demo user and
    /// workspace, an agent and a sample app.
    Demo(DemoArgs),
}

#[derive(Args)]
struct DemoArgs {
    /// HTTP listen address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// UDP address of the embedded relay.
    #[arg(long, default_value = "127.0.0.1:3478")]
    relay_listen: SocketAddr,
    /// Data directory (default: a temporary one, removed on exit).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The dashboard's web directory (see `burrowd serve --help`); its packages are built
    /// first if missing.
    #[arg(long, env = "BURROWD_WEB_DIR")]
    web_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RelayKind {
    /// burrowd's own STUN/TURN relay over UDP.
    Embedded,
    /// No relay.
    None,
}

#[derive(Args)]
struct ServeArgs {
    /// HTTP listen address.
    #[arg(long, default_value = "127.0.0.1:8080", env = "BURROWD_LISTEN")]
    listen: SocketAddr,
    /// Directory of the database and the relay secret (created if missing).
    #[arg(long, env = "BURROWD_DATA_DIR")]
    data_dir: PathBuf,
    /// URL clients, agents and browsers use to reach this server; its origin is the
    /// dashboard's, the only one whose pages may log in (default: http://LISTEN).
    #[arg(long)]
    public_url: Option<String>,
    /// Serve workspace apps in the browser, each on an origin of its own under this
    /// wildcard URL, e.g. http://*.localhost:8080 or https://*.apps.example.com (whose
    /// names must resolve to burrowd). Without it, apps open only with `burrow
    /// port-forward`.
    #[arg(long, value_parser = parse_apps_url)]
    apps_url: Option<AppsUrl>,
    /// Relay to run; ignored when --turn-url names an external one.
    #[arg(long, value_enum, default_value = "embedded")]
    relay: RelayKind,
    /// UDP address of the embedded relay.
    #[arg(long, default_value = "127.0.0.1:3478")]
    relay_listen: SocketAddr,
    /// Address put in relay candidates and ICE URLs (default: the --relay-listen IP).
    #[arg(long)]
    relay_ip: Option<IpAddr>,
    /// Let the embedded relay forward to loopback, private and link-local addresses.
    /// Only for tests and single-host demos: it exposes the relay host's networks.
    #[arg(long)]
    relay_danger_allow_private_peers: bool,
    /// External TURN server (coturn with use-auth-secret), e.g. turn:turn.example:3478.
    /// Turns the embedded relay off.
    #[arg(long, requires = "turn_secret")]
    turn_url: Option<String>,
    /// The external TURN server's static-auth-secret (prefer the environment variable:
    /// command lines are visible to other local users).
    #[arg(
        long,
        env = "BURROWD_TURN_SECRET",
        hide_env_values = true,
        requires = "turn_url"
    )]
    turn_secret: Option<String>,
    /// STUN URL to hand out (repeatable); replaces the relay's own.
    #[arg(long = "stun-url")]
    stun_urls: Vec<String>,
    /// Web origin allowed to call the API from a browser, e.g. http://127.0.0.1:8000
    /// (repeatable; CORS). Needed only for pages burrowd does not serve itself.
    #[arg(long = "cors-allow-origin")]
    cors_allow_origins: Vec<String>,
    /// The dashboard's web directory; its pkg/ holds the built Wasm packages (npm run
    /// build). Default: web/ in the source tree burrowd was built from.
    #[arg(long, env = "BURROWD_WEB_DIR")]
    web_dir: Option<PathBuf>,
    /// Lifetime of minted TURN credentials, in seconds.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    turn_ttl_secs: u64,
}

#[derive(Args)]
struct AdminArgs {
    /// Directory of the database.
    #[arg(long, env = "BURROWD_DATA_DIR")]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Users.
    #[command(subcommand)]
    User(UserCommand),
    /// Workspaces.
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// Print the audit log (newest rows, oldest first).
    Audit {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
        /// Most rows to print.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user; prints its API token (shown only once).
    Add {
        /// User name.
        name: String,
    },
}

#[derive(Subcommand)]
enum WorkspaceCommand {
    /// Create a workspace; prints its agent token (shown only once).
    Add {
        /// Workspace name.
        name: String,
        /// Owning user.
        #[arg(long)]
        owner: String,
    },
}

fn main() -> ExitCode {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,webrtc=warn,rtc=warn,turn=warn"));
    // Logs go to stderr: stdout carries the tokens admin commands print.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("burrowd: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("burrowd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Admin(args) => admin(args).await,
        Command::Demo(args) => {
            let config = burrow_server::demo::DemoConfig {
                listen: args.listen,
                relay_listen: args.relay_listen,
                data_dir: args.data_dir,
                web_dir: args
                    .web_dir
                    .unwrap_or_else(burrow_server::web::default_web_dir),
            };
            burrow_server::demo::run(config, shutdown_signal()).await
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let relay = match (&args.turn_url, &args.turn_secret) {
        (Some(turn_url), Some(secret)) => RelayMode::External {
            turn_url: turn_url.clone(),
            secret: secret.clone(),
        },
        (None, None) => match args.relay {
            RelayKind::None => RelayMode::None,
            RelayKind::Embedded => RelayMode::Embedded(RelayConfig {
                listen: args.relay_listen,
                relay_ip: args.relay_ip,
                allow_private_peers: args.relay_danger_allow_private_peers,
            }),
        },
        _ => bail!("--turn-url and --turn-secret go together"),
    };
    let config = ServerConfig {
        listen: args.listen,
        data_dir: args.data_dir,
        public_url: args.public_url,
        apps_url: args.apps_url,
        relay,
        stun_urls: args.stun_urls,
        timing: Timing {
            turn_ttl: Duration::from_secs(args.turn_ttl_secs),
            ..Timing::default()
        },
        cors_allow_origins: args.cors_allow_origins,
        web_dir: args
            .web_dir
            .unwrap_or_else(burrow_server::web::default_web_dir),
    };
    let server = burrow_server::start(config)
        .await
        .context("starting burrowd")?;
    server
        .run_until(shutdown_signal())
        .await
        .context("serving")?;
    Ok(())
}

fn parse_apps_url(s: &str) -> Result<AppsUrl, String> {
    AppsUrl::parse(s).map_err(|e| e.to_string())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("signal received");
}

async fn admin(args: AdminArgs) -> anyhow::Result<()> {
    let dir = &args.data_dir;
    let mut out = std::io::stdout().lock();
    match args.command {
        AdminCommand::User(UserCommand::Add { name }) => {
            let token = burrow_server::admin_add_user(dir, &name)
                .await
                .with_context(|| format!("adding user {name:?}"))?;
            writeln!(out, "{token}")?;
        }
        AdminCommand::Workspace(WorkspaceCommand::Add { name, owner }) => {
            let token = burrow_server::admin_add_workspace(dir, &name, &owner)
                .await
                .with_context(|| format!("adding workspace {name:?}"))?;
            writeln!(out, "{token}")?;
        }
        AdminCommand::Audit { json, limit } => {
            let rows = burrow_server::admin_audit(dir, limit)
                .await
                .context("reading the audit log")?;
            if json {
                serde_json::to_writer_pretty(&mut out, &rows)?;
                writeln!(out)?;
            } else {
                write!(out, "{}", burrow_server::format_audit_table(&rows))?;
            }
        }
    }
    out.flush()?;
    Ok(())
}
