//! `keelson-server`: the update server binary (thin: parses arguments, calls the library).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use keelson_server::auth::{Role, create_token};
use keelson_server::db::{Db, redact_url};
use keelson_server::{AppState, ServerConfig};

/// Omaha update server with rollout control, REST API, dashboard and FleetLock.
#[derive(Debug, Parser)]
#[command(name = "keelson-server", version)]
struct Cli {
    /// Database: sqlite://PATH (created if missing) or postgres://USER@HOST/DB.
    #[arg(
        long,
        env = "KEELSON_DATABASE_URL",
        default_value = "sqlite://./keelson.db",
        global = true
    )]
    database_url: String,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory for uploaded package payloads.
    #[arg(long, default_value = "./keelson-data")]
    data_dir: PathBuf,
    /// URL nodes use to reach this server (default: the request's Host header).
    #[arg(long)]
    public_url: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve HTTP (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print it once.
    Create(TokenArgs),
}

#[tokio::main]
async fn main() -> Result<()> {
    keelson_log::init(keelson_log::Style::default());
    let cli = Cli::parse();
    let db = Db::connect(&cli.database_url)
        .await
        .with_context(|| format!("opening database {}", redact_url(&cli.database_url)))?;
    match cli.command {
        Some(Command::Token(TokenCommand::Create(args))) => token_create(&db, &args).await,
        Some(Command::Serve(args)) => serve(db, args).await,
        None => serve(db, cli.serve).await,
    }
}

/// Arguments of `keelson-server token create`.
#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// Role of the new token: admin or viewer.
    #[arg(long, value_parser = ["admin", "viewer"])]
    role: String,
    /// A note saying who or what the token is for.
    #[arg(long, default_value = "")]
    description: String,
    /// Print the token as JSON ({"id", "role", "token"}).
    #[arg(long)]
    json: bool,
}

/// `keelson-server token create`: store a new token and print it once.
async fn token_create(db: &Db, args: &TokenArgs) -> Result<()> {
    let role: Role = args
        .role
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--role: {e}"))?;
    let new = create_token(db, role, &args.description)
        .await
        .with_context(|| format!("creating a {role} token"))?;
    if args.json {
        println!("{}", serde_json::to_string(&new)?);
    } else {
        eprintln!(
            "created {} token {} (shown once; only its hash is stored):",
            new.role, new.id
        );
        println!("{}", new.token);
    }
    Ok(())
}

async fn serve(db: Db, args: ServeArgs) -> Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data directory {}", args.data_dir.display()))?;
    let mut config = ServerConfig::new(&args.data_dir);
    config.public_url = args.public_url;
    let app = keelson_server::router(AppState::new(db, config));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(listen = %args.listen, "keelson-server ready");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .context("serving HTTP")
}

/// SIGINT or SIGTERM (systemd's stop): finish in-flight requests, then exit 0.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on Ctrl-C only");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutting down");
}
