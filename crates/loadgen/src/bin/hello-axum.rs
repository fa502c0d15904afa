//! `hello-axum`: the peer `cargo xtask bench server` measures next to keelson-server.
//!
//! The same framework, runtime and HTTP stack with no work behind the route, so the ratio
//! says what our Omaha handling and database cost on top of axum itself.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use axum::Router;
use axum::routing::post;
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "hello-axum",
    about = "axum hello-world peer for the server bench"
)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    // Reads the body like the Omaha endpoint does, then answers a constant.
    let app = Router::new().route("/v1/update", post(|_body: String| async { "hello" }));
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("listening on {}", cli.listen))?;
    axum::serve(listener, app).await.context("serving HTTP")
}
