//! One module per subcommand, each a function from its parsed arguments (and, where it
//! reads settings no flag carries, the process's [`Settings`]) to a result; [`execute`]
//! only picks one.

mod backfill;
mod datagen;
mod demo;
mod emr;
mod executor;
mod health;
mod jobs;
mod reference;
mod run;
mod runs;
mod scheduler;
pub mod sfn;
mod submit;
mod validate;

use crate::cli::{
    Cli, Command, DatagenCommand, EmrCommand, JobsCommand, SfnCommand, StoreCommand, TokenCommand,
};
use crate::config::Settings;
use crate::error::Result;

/// Carries out one command.
pub async fn execute(cli: Cli, settings: &Settings) -> Result<()> {
    match cli.command {
        Command::Run(args) => run::run(args, settings).await,
        Command::Demo(args) => demo::run(&args, settings).await,
        Command::Validate(args) => validate::run(args, settings).await,
        Command::Datagen(DatagenCommand::Claims(args)) => datagen::claims(&args),
        Command::Schema => reference::schema(),
        Command::Settings => reference::settings(),
        Command::Scheduler(args) => scheduler::run(args, settings).await,
        Command::Executor(args) => executor::run(args, settings).await,
        Command::Submit(args) => submit::run(args).await,
        Command::Runs(args) => runs::list(args).await,
        Command::Status(args) if is_backfill(&args.run_id) => backfill::status(args).await,
        Command::Status(args) => runs::status(args).await,
        Command::Cancel(args) if is_backfill(&args.run_id) => backfill::cancel(args).await,
        Command::Cancel(args) => runs::cancel(args).await,
        Command::Jobs(JobsCommand::Register(args)) => jobs::register(args).await,
        Command::Jobs(JobsCommand::List(args)) => jobs::list(args).await,
        Command::SfnWorker(args) => sfn::worker(args, settings).await,
        Command::Sfn(SfnCommand::Render(args)) => sfn::render(&args),
        Command::Backfill(args) => backfill::run(args).await,
        Command::Backfills(args) => backfill::list(args).await,
        Command::Health(args) => health::run(args).await,
        Command::Emr(EmrCommand::Submit(args)) => emr::submit(&args, settings).await,
        Command::Token(TokenCommand::New(args)) => reference::new_token(&args),
        Command::Audit(args) => runs::audit(args).await,
        Command::Store(StoreCommand::Backup(args)) => runs::backup_store(args).await,
        Command::Store(StoreCommand::Restore(args)) => runs::restore_store(&args),
    }
}

/// Backfill ids start with `b-`; `status` and `cancel` take either kind.
fn is_backfill(id: &str) -> bool {
    id.starts_with("b-")
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}
