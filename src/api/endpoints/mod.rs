//! Built-in endpoint groups, one file each.

pub mod data;
pub mod system;
