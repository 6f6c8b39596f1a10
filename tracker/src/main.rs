//! `shoal-tracker`: the swarm service. See `shoal-tracker --help` and docs/tracker.md.

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
use shoal_tracker::config::{Cli, Command, LogFormat, TokenCommand};
use shoal_tracker::token::{unix_now, Alg, Claims, Key, Keys};
use std::path::{Path, PathBuf};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the system allocator: an announce allocates and frees many small
/// buffers (request, JSON answer, neighbour list), and glibc's malloc/free were 7 % of the
/// tracker's CPU under load (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `--healthcheck` is added here rather than in `Cli`: it is a client of a running
    // tracker, for container images without a shell (a Dockerfile HEALTHCHECK).
    let matches = Cli::command()
        .arg(
            clap::Arg::new("healthcheck")
                .long("healthcheck")
                .action(clap::ArgAction::SetTrue)
                .help(
                    "Ask the tracker at the configured --listen address (same flags, env and \
                     file) for /healthz and exit 0 if it answers 200, 1 otherwise: a \
                     container health check for images without a shell or curl",
                ),
        )
        .get_matches();
    let healthcheck = matches.get_flag("healthcheck");
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command.take() {
        Some(Command::Token(cmd)) => {
            println!("{}", token_command(cmd)?);
            return Ok(());
        }
        Some(Command::Digests(cmd)) => {
            println!("{}", shoal_tracker::signed_digests::run(&cmd)?);
            return Ok(());
        }
        None => {}
    }
    let print_config = cli.print_config;
    let config = cli.into_config()?;
    if print_config {
        print!("{}", config.to_documented_toml());
        return Ok(());
    }
    if healthcheck {
        match probe_healthz(config.listen, config.tls_cert.is_some()).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                eprintln!("unhealthy: {e:#}");
                std::process::exit(1);
            }
        }
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    // Handlers first: a SIGTERM that arrives once the port is open must mean a clean stop,
    // and a SIGHUP a reload (its default action would end the process).
    let stop = shutdown_signal()?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    let tracker = shoal_tracker::spawn(config)
        .await
        .context("starting the tracker")?;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = hangup.recv() => match tracker.reload_tls() {
                Ok(true) => tracing::info!(
                    "SIGHUP: TLS certificate and key re-read; new connections get them, open ones keep theirs"
                ),
                Ok(false) => tracing::info!("SIGHUP: nothing to re-read (the tracker serves plain HTTP)"),
                Err(e) => tracing::error!(
                    error = %e,
                    "SIGHUP: TLS certificate not re-read; still serving the previous one (fix the files and send SIGHUP again)"
                ),
            },
        }
    }
    tracing::info!("shutting down: finishing in-flight requests");
    tracker.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

/// `shoal-tracker token ...`: what to print.
fn token_command(cmd: TokenCommand) -> anyhow::Result<String> {
    match cmd {
        TokenCommand::Keygen { kid, alg, out } => {
            anyhow::ensure!(
                !kid.is_empty() && !kid.contains(char::is_whitespace),
                "--kid must be non-empty and without spaces"
            );
            match alg {
                Alg::Hmac => Ok(Key::generate_line(&kid)),
                Alg::Ed25519 => {
                    let out =
                        out.context("--alg ed25519 needs --out FILE (writes FILE and FILE.pub)")?;
                    let public_path = PathBuf::from(format!("{}.pub", out.display()));
                    let (private, public) = Key::generate_ed25519_lines(&kid);
                    write_new(&out, &private, 0o600)?;
                    write_new(&public_path, &public, 0o644)?;
                    Ok(format!(
                        "private key (mint tokens with it; keep it off trackers): {}\npublic key (auth_keys_file of trackers): {}",
                        out.display(),
                        public_path.display()
                    ))
                }
            }
        }
        TokenCommand::Mint {
            key_file,
            alg,
            kid,
            swarm,
            ttl,
        } => {
            shoal_tracker::policy::check_pattern(&swarm)?;
            let keys = Keys::load_signing(&key_file)?;
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
            if let Some(alg) = alg {
                anyhow::ensure!(
                    key.alg() == alg,
                    "key {:?} is {:?}, not {alg:?}",
                    key.kid,
                    key.alg()
                );
            }
            Ok(key.mint(&claims)?)
        }
    }
}

/// Writes a key file that must not exist yet (never overwrite a key), with `mode`.
fn write_new(path: &Path, line: &str, mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{line}").with_context(|| format!("writing {}", path.display()))
}

/// GETs `/healthz` from a tracker listening on `listen` (an unspecified address is asked on
/// loopback; over HTTPS when `tls`) and succeeds on a 200 answer, within a few seconds.
///
/// Over HTTPS the tracker's certificate is not verified: the probe asks its own host's
/// loopback, sends nothing secret and only reads a status, and the certificate names the
/// public host name, not loopback (nor is its CA necessarily known here).
async fn probe_healthz(listen: std::net::SocketAddr, tls: bool) -> anyhow::Result<()> {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let scheme = if tls { "https" } else { "http" };
    let url = format!("{scheme}://{addr}/healthz");
    let answer = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .danger_accept_invalid_certs(tls)
        .build()?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("asking {url}"))?;
    anyhow::ensure!(
        answer.status() == reqwest::StatusCode::OK,
        "{url} answered {}",
        answer.status()
    );
    Ok(())
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
