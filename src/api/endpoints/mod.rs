//! Built-in endpoint groups, one file each.

pub mod system;
