//! `exactly`: the operator's tool for exactly's consumer groups.
//!
//! exactly keeps a Database-mode group's positions in PostgreSQL, beside the effects they
//! belong to; Kafka's own tools only see an advisory copy. This tool shows and changes the
//! real positions, shows lag against the last stable offset, the outbox backlog, the dead
//! letters (and moves them back into processing exactly once), finds transactions left
//! open on a topic and fences the transactional id that holds them, and creates or
//! upgrades exactly's tables.
//!
//! Output is a table by default and JSON with `--json`; an error is one sentence with its
//! cause, and the exit status says what kind (see [`error::Error::exit_code`]).

mod admin;
mod args;
mod commands;
mod connect;
mod error;
mod kafka;
mod render;
mod timestamp;
mod wire;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = args::Cli::parse();
    match commands::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::from(error.exit_code())
        }
    }
}
