//! `voxgate`: parses the command line and dispatches. See the library for the rest.

use clap::Parser;
use voxgate_server::config::{Cli, Command};
use voxgate_server::{bench, call, commands, models, serve, telemetry};

/// mimalloc: thousands of calls allocate and free small buffers (audio frames,
/// messages) on every worker thread, 50 times a second each; it keeps them in
/// per-thread pages (see bench/results for the measured difference).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    if matches!(cli.command, Command::Serve(_) | Command::Bench(_)) {
        raise_open_files_limit();
    }
    let rt = match &cli.command {
        // The load generator: one thread by default (see `BenchArgs::threads`).
        Command::Bench(args) if args.threads == 1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        Command::Bench(args) => {
            tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads.into()).enable_all().build()
        }
        _ => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    }
    .expect("a tokio runtime");
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

/// Every call is a socket (and a proxied one two): the usual soft limit of 1,024
/// open files would stop a server near a thousand calls while the hard limit
/// allows far more. The soft limit is raised to the hard one, as nginx's
/// `worker_rlimit_nofile` or Go's runtime do; the operator's hard limit stands.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open files limit"),
            Err(e) => tracing::warn!(soft, hard, error = %e, "cannot raise the open files limit"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open files limit"),
    }
}
