//! The DB API (in progress): table descriptions and drivers.
