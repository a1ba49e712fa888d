//! The command line: `serve` (default), `check-config`, `demo`, `doctor`, and tools.

use crate::{config::Settings, startup::Application, telemetry};
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "pusher-dual-auth",
    version,
    about = "Pusher Channels auth for an app migration: one endpoint per Pusher app"
)]
pub struct Cli {
    /// The TOML config file (environment: DUAL_AUTH_CONFIG). DUAL_AUTH__SECTION__KEY variables override it.
    #[arg(long, short, env = "DUAL_AUTH_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the service (the default).
    Serve,
    /// Validate the config and print it with secrets redacted.
    CheckConfig,
    /// Run on throwaway demo apps with a built-in session check (loopback only).
    Demo(crate::demo::DemoArgs),
    /// Compute the auth answer offline for a socket id and channel (or a sign-in).
    Sign(crate::tools::SignArgs),
    /// Check every configured app against its real Pusher server, as a client would; exit 0 only if all passed.
    Doctor(crate::doctor::DoctorArgs),
    /// Say which configured app (if any) produced an auth string.
    Verify(crate::tools::VerifyArgs),
    /// Exit 0 if the running service answers /healthz (for container HEALTHCHECKs; no curl needed).
    Healthcheck(HealthcheckArgs),
}

#[derive(clap::Args, Debug)]
pub struct HealthcheckArgs {
    /// The URL to check; default: /healthz on the configured admin_listen.
    #[arg(long)]
    pub url: Option<String>,
}

fn load(config: Option<&std::path::Path>) -> anyhow::Result<Settings> {
    let has_env = std::env::vars().any(|(k, _)| k.starts_with(&format!("{}__", crate::config::ENV_PREFIX)));
    if config.is_none() && !has_env {
        anyhow::bail!(
            "no configuration: pass --config FILE (or set DUAL_AUTH_CONFIG); see deploy/config.example.toml, \
             or try `pusher-dual-auth demo`"
        );
    }
    Ok(Settings::load(config)?)
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let settings = load(cli.config.as_deref())?;
            telemetry::init(&settings.log);
            let apps: Vec<String> = settings.apps.keys().map(|a| format!("/auth/{a}")).collect();
            for warning in settings.warnings() {
                tracing::warn!("{warning}");
            }
            let app = Application::build(settings)?;
            if let Some(path) = cli.config {
                app.watch_config(path)?;
            }
            tracing::info!(port = app.port(), admin_port = ?app.admin_port(), routes = ?apps, "pusher-dual-auth listening");
            app.run_until_stopped().await.context("server error")
        }
        Command::CheckConfig => {
            let settings = load(cli.config.as_deref())?;
            print!("{}", settings.redacted_toml());
            for warning in settings.warnings() {
                eprintln!("warning: {warning}");
            }
            eprintln!(
                "config OK: {} app(s): {}",
                settings.apps.len(),
                settings.apps.keys().cloned().collect::<Vec<_>>().join(", ")
            );
            Ok(())
        }
        Command::Demo(args) => crate::demo::run(args).await,
        Command::Sign(args) => {
            let settings = load(cli.config.as_deref())?;
            println!("{}", crate::tools::sign(&settings, &args)?);
            Ok(())
        }
        Command::Verify(args) => {
            let settings = load(cli.config.as_deref())?;
            let (ok, verdict) = crate::tools::verify(&settings, &args)?;
            println!("{verdict}");
            if !ok {
                // The verdict is the whole answer: exit 1 without a second, generic line.
                let _ = std::io::Write::flush(&mut std::io::stdout());
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Doctor(args) => {
            let settings = load(cli.config.as_deref())?;
            if crate::doctor::run(&settings, &args).await? {
                Ok(())
            } else {
                Err(anyhow::anyhow!("doctor found problems (see above)"))
            }
        }
        Command::Healthcheck(args) => healthcheck(cli.config.as_deref(), args.url).await,
    }
}

async fn healthcheck(config: Option<&std::path::Path>, url: Option<String>) -> anyhow::Result<()> {
    let url = match url {
        Some(u) => u,
        None => {
            let settings = load(config)?;
            let addr = settings.server.admin_listen;
            let host =
                if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
            let host = if host.contains(':') { format!("[{host}]") } else { host };
            format!("http://{host}:{}/healthz", addr.port())
        }
    };
    let client = crate::outbound::client_builder(std::time::Duration::from_secs(3)).build()?;
    let status = client.get(&url).send().await.with_context(|| format!("GET {url}"))?.status();
    anyhow::ensure!(status.is_success(), "GET {url}: {status}");
    Ok(())
}
