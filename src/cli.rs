//! The command line: `serve` (default), `check-config`, `demo`.

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
}

fn load(config: Option<&std::path::Path>) -> anyhow::Result<Settings> {
    let has_env = std::env::vars().any(|(k, _)| k.starts_with("DUAL_AUTH__"));
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
            let app = Application::build(settings)?;
            tracing::info!(port = app.port(), routes = ?apps, "pusher-dual-auth listening");
            app.run_until_stopped().await.context("server error")
        }
        Command::CheckConfig => {
            let settings = load(cli.config.as_deref())?;
            print!("{}", settings.redacted_toml());
            eprintln!(
                "config OK: {} app(s): {}",
                settings.apps.len(),
                settings.apps.keys().cloned().collect::<Vec<_>>().join(", ")
            );
            Ok(())
        }
        Command::Demo(args) => crate::demo::run(args).await,
    }
}
