//! What operators run, beside the runtime: the dead letters (list, replay, re-drive) and
//! the stored positions (list, set) and migrations. The `exactly` command-line tool calls
//! these; they are public as `exactly::dead_letters` and `exactly::offsets`.

pub mod dead_letters;
pub mod offsets;
