//! `shoal-tracker`: the swarm service. See `shoal-tracker --help` and docs/tracker.md.

use anyhow::Context;
use clap::Parser;
use shoal_tracker::config::{Cli, Command, LogFormat, TokenCommand};
use shoal_tracker::token::{unix_now, Claims, Key, Keys};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    if let Some(Command::Token(cmd)) = cli.command.take() {
        println!("{}", token_command(cmd)?);
        return Ok(());
    }
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
    // Handlers first: a SIGTERM that arrives once the port is open must mean a clean stop.
    let stop = shutdown_signal()?;
    let tracker = shoal_tracker::spawn(config)
        .await
        .context("starting the tracker")?;
    stop.await;
    tracing::info!("shutting down: finishing in-flight requests");
    tracker.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

/// `shoal-tracker token ...`: what to print.
fn token_command(cmd: TokenCommand) -> anyhow::Result<String> {
    match cmd {
        TokenCommand::Keygen { kid } => {
            anyhow::ensure!(
                !kid.is_empty() && !kid.contains(char::is_whitespace),
                "--kid must be non-empty and without spaces"
            );
            Ok(Key::generate_line(&kid))
        }
        TokenCommand::Mint {
            key_file,
            kid,
            swarm,
            ttl,
        } => {
            shoal_tracker::policy::check_pattern(&swarm)?;
            let keys = Keys::load(&key_file)?;
            let key = keys.get(kid.as_deref()).with_context(|| {
                format!(
                    "no key {:?} in {}",
                    kid.unwrap_or_default(),
                    key_file.display()
                )
            })?;
            let claims = Claims {
                swarm,
                exp: unix_now().saturating_add(ttl.as_secs()),
                nbf: None,
                kid: None,
            };
            Ok(key.mint(&claims))
        }
    }
}

/// Resolves on SIGTERM or SIGINT; the handlers are registered when this is called.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
