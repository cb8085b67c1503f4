//! Geohash locations (docs/data.md): encode, decode, cell bounds and neighbours over the `geohash`
//! crate, the great-circle distance with the platform's Earth radius (`hash`), and the grid of
//! cells that covers a search circle ([`grid`](fn@grid)), which is what `/location/get` walks
//! nearest cell first.
//!
//! A geohash names a lat/lon rectangle; a longer hash is a smaller rectangle inside the shorter
//! one, so every point of a cell has a geohash that begins with the cell's. Locations are stored
//! with a full-precision geohash and searched by prefix.

pub mod grid;
mod hash;

pub use grid::{grid, Cell};
pub use hash::{
    bounds, cell_length, cell_size_km, decode, distance, encode, neighbours, round_down, Bounds,
    GeoError, EARTH_RADIUS_KM, MAX_LENGTH, PARAMS,
};
