//! `voxgate`: parses the command line and dispatches. See the library for the rest.

use clap::Parser;
use voxgate_server::config::{Cli, Command};
use voxgate_server::{bench, call, commands, models, serve, telemetry};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    telemetry::init_logs(&cli.log);
    // Sentry must start before the runtime so its panic hook sees every thread.
    let sentry = match &cli.command {
        Command::Serve(args) => match telemetry::init_sentry(args.sentry_dsn.as_deref()) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("error: {e:#}");
                return std::process::ExitCode::from(2);
            }
        },
        _ => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    let result = rt.block_on(run(cli.command));
    drop(sentry);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    voxgate_server::init_crypto();
    match command {
        Command::Serve(args) => {
            let public_url = args.public_url.clone();
            let running = serve::start(*args).await?;
            let url = public_url.unwrap_or_else(|| running.url());
            println!("voxgate is listening on {url} ({:?})", running.role);
            if let Some(code) = &running.login_code {
                println!("First start: open this link to sign in (it works once, for 24 hours):");
                println!("  {}/login#code={code}", url.trim_end_matches('/'));
            }
            serve::shutdown_signal().await;
            running.drain().await
        }
        Command::Migrate(db) => commands::migrate(&db).await,
        Command::Keys { command, db } => commands::keys(&db, command, &mut std::io::stdout()).await,
        Command::Call(args) => match call::run(args).await?.problem() {
            None => Ok(()),
            Some(problem) => Err(anyhow::anyhow!(problem)),
        },
        Command::Bench(args) => match bench::run(args).await?.problem() {
            None => Ok(()),
            Some(problem) => Err(anyhow::anyhow!(problem)),
        },
        Command::Models { command } => {
            tokio::task::spawn_blocking(move || models::run(command, &mut std::io::stdout())).await?
        }
    }
}
