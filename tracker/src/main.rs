//! `shoal-tracker`: the swarm service. See `shoal-tracker --help` and docs/tracker.md.

use anyhow::Context;
use clap::Parser;
use shoal_tracker::config::{Cli, LogFormat};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let print_config = cli.print_config;
    let config = cli.into_config()?;
    if print_config {
        print!("{}", config.to_documented_toml());
        return Ok(());
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let tracker = shoal_tracker::spawn(config)
        .await
        .context("starting the tracker")?;
    shutdown_signal().await?;
    tracing::info!("shutting down: finishing in-flight requests");
    tracker.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r.context("installing the SIGINT handler")?,
    }
    Ok(())
}
