//! What both modes' loops share at run time, below the runtime that starts them: the
//! state of one runtime ([`shared::Shared`]), the backoff of infrastructure retries, and
//! the contract between the runtime and a mode ([`group::GroupSpec`]: a handler ready to
//! start as a consumer group).

pub(crate) mod backoff;
pub(crate) mod group;
pub(crate) mod shared;
