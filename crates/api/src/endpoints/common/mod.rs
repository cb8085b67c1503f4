//! Helpers several endpoint groups share. Endpoint groups depend on these and never on each
//! other, so a group can be added, removed or disabled without touching the rest.

pub(crate) mod files;
pub(crate) mod ids;
pub(crate) mod publish;
pub(crate) mod query;
pub(crate) mod rows;
