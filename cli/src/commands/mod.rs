//! One module per command family; [`run`] dispatches.

mod dead_letters;
mod migrate;
mod offsets;
mod outbox;
mod positions;
mod transactions;

use crate::args::{Cli, Command, DeadLettersCommand, OffsetsCommand, OutboxCommand, TransactionsCommand};
use crate::error::Error;

/// Runs the command `cli` names.
pub(crate) async fn run(cli: Cli) -> Result<(), Error> {
    let (connection, json) = (&cli.connection, cli.json);
    let uses_kafka = matches!(cli.command, Command::Offsets(_) | Command::Lag(_) | Command::Transactions(_));
    if uses_kafka && connection.has_brokers() {
        connection.check_kafka().await?;
    }
    match cli.command {
        Command::Migrate => migrate::run(connection, json).await,
        Command::Offsets(OffsetsCommand::Show(group)) => offsets::show(connection, &group, json).await,
        Command::Offsets(OffsetsCommand::Set(args)) => offsets::set(connection, &args, json).await,
        Command::Offsets(OffsetsCommand::Reset(args)) => offsets::reset(connection, &args, json).await,
        Command::Lag(args) => offsets::lag(connection, &args.group, json).await,
        Command::Outbox(OutboxCommand::Status) => outbox::status(connection, json).await,
        Command::DeadLetters(DeadLettersCommand::List { group, limit, after }) => {
            dead_letters::list(connection, &group, limit, after, json).await
        }
        Command::DeadLetters(DeadLettersCommand::Show { id }) => dead_letters::show(connection, id, json).await,
        Command::DeadLetters(DeadLettersCommand::Replay { group, ids, all, to }) => {
            dead_letters::replay(connection, &group, ids, all, to.as_deref(), json).await
        }
        Command::Transactions(TransactionsCommand::List { topics }) => transactions::list(connection, &topics, json),
        Command::Transactions(TransactionsCommand::Abort { transactional_id, topics, wait }) => {
            transactions::abort(connection, &transactional_id, &topics, wait, json).await
        }
    }
}
