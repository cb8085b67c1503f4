//! What the key-value drivers ([`crate::sled`], and the network key-value stores) share: the
//! order-preserving key encoding and stored-row form ([`codec`]), select conditions evaluated in
//! memory with SQLite's semantics ([`filter`]), and the key ranges a select must scan
//! ([`ranges`]). A key-value driver answers every call as SQLite would by using these, never by
//! using another driver.

pub(crate) mod codec;
pub(crate) mod filter;
pub(crate) mod ranges;
