//! Geohash points and cells over the `geohash` crate: encode, decode, cell bounds and
//! neighbours, the great-circle distance with the platform's Earth radius, and cell sizes. The
//! grid of a search circle is built on these, so they sit apart from it.

use bkjs_base::config::{Kind, Param};

/// Geo parameters (core ones in docs/config.md, hence no module prefix).
pub static PARAMS: &[Param] = &[
    Param::new(
        "min-distance",
        Kind::Number,
        "5",
        "km: a location put closer than this to the last one is ignored (305); the smallest search radius and the default distance rounding",
    ),
    Param::new(
        "max-distance",
        Kind::Number,
        "50",
        "km: the largest search radius of /location/get",
    ),
];

/// The Earth radius the platform computes distances with (km).
pub const EARTH_RADIUS_KM: f64 = 6378.1;

/// The longest geohash (and the precision locations are stored with).
pub const MAX_LENGTH: usize = 12;

/// A bad coordinate or geohash.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GeoError {
    #[error("latitude must be a number within -90..90, longitude within -180..180")]
    BadCoordinate,
    #[error("invalid geohash {0:?}")]
    BadHash(String),
}

/// A rectangle in degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    pub min_lat: f64,
    pub max_lat: f64,
    pub min_lon: f64,
    pub max_lon: f64,
}

pub(super) fn check(lat: f64, lon: f64) -> Result<(), GeoError> {
    if lat.is_finite()
        && lon.is_finite()
        && (-90.0..=90.0).contains(&lat)
        && (-180.0..=180.0).contains(&lon)
    {
        Ok(())
    } else {
        Err(GeoError::BadCoordinate)
    }
}

/// The geohash of length `len` (1..=12) of a point.
pub fn encode(lat: f64, lon: f64, len: usize) -> Result<String, GeoError> {
    check(lat, lon)?;
    // The crate maps exactly 90 to the south pole's row (its bit trick wraps at 2.0); the
    // northern-most cell is meant. Longitude 180 wraps to -180, which is the same meridian.
    let lat = lat.min(90.0 - 1e-12);
    geohash::encode(geohash::Coord { x: lon, y: lat }, len.clamp(1, MAX_LENGTH))
        .map_err(|_| GeoError::BadCoordinate)
}

/// The centre of a geohash cell: (latitude, longitude).
pub fn decode(hash: &str) -> Result<(f64, f64), GeoError> {
    let b = bounds(hash)?;
    Ok(((b.min_lat + b.max_lat) / 2.0, (b.min_lon + b.max_lon) / 2.0))
}

/// The rectangle a geohash names.
pub fn bounds(hash: &str) -> Result<Bounds, GeoError> {
    let valid = !hash.is_empty()
        && hash.len() <= MAX_LENGTH
        && hash.bytes().all(
            |c| matches!(c, b'0'..=b'9' | b'b'..=b'h' | b'j' | b'k' | b'm' | b'n' | b'p'..=b'z'),
        );
    if !valid {
        return Err(GeoError::BadHash(hash.to_string()));
    }
    let r = geohash::decode_bbox(hash).map_err(|_| GeoError::BadHash(hash.to_string()))?;
    Ok(Bounds {
        min_lat: r.min().y,
        max_lat: r.max().y,
        min_lon: r.min().x,
        max_lon: r.max().x,
    })
}

/// The eight cells around `hash`, of the same length: n, ne, e, se, s, sw, w, nw.
pub fn neighbours(hash: &str) -> Result<[String; 8], GeoError> {
    bounds(hash)?;
    let n = geohash::neighbors(hash).map_err(|_| GeoError::BadHash(hash.to_string()))?;
    Ok([n.n, n.ne, n.e, n.se, n.s, n.sw, n.w, n.nw])
}

/// Great-circle (haversine) distance in km with R = [`EARTH_RADIUS_KM`].
pub fn distance(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
}

/// `d` rounded down to a multiple of `step` (km); `step <= 0` keeps it as it is.
pub fn round_down(d: f64, step: f64) -> f64 {
    if step > 0.0 {
        (d / step).floor() * step
    } else {
        d
    }
}

/// Height and width (km, at the equator) of the cells of geohash length `len`.
pub fn cell_size_km(len: usize) -> (f64, f64) {
    let bits = 5 * len as i32;
    let lat_bits = bits / 2;
    let lon_bits = bits - lat_bits;
    let km_per_degree = EARTH_RADIUS_KM * std::f64::consts::PI / 180.0;
    (
        180.0 / 2f64.powi(lat_bits) * km_per_degree,
        360.0 / 2f64.powi(lon_bits) * km_per_degree,
    )
}

/// The longest geohash length whose cells are larger than `km` on their shorter side
/// (5 km → 4: cells of about 20 × 39 km).
pub fn cell_length(km: f64) -> usize {
    (1..=MAX_LENGTH)
        .rev()
        .find(|&len| {
            let (h, w) = cell_size_km(len);
            h.min(w) > km
        })
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_known_geohashes() {
        // Wikipedia's example and the geohash crate's documented value.
        assert_eq!(
            encode(57.64911, 10.40744, 11).expect("encode"),
            "u4pruydqqvj"
        );
        assert_eq!(encode(35.3003, -120.6623, 5).expect("encode"), "9q60y");
        assert_eq!(
            encode(35.3003, -120.6623, 10).expect("encode"),
            "9q60y60rhs"
        );
        assert_eq!(encode(0.0, 0.0, 1).expect("encode"), "s");
        assert_eq!(encode(-90.0, -180.0, 4).expect("encode"), "0000");
        assert_eq!(
            encode(90.0, 180.0, 4).expect("encode"),
            "bpbp",
            "the north pole is in the north"
        );
        assert_eq!(encode(90.0, 179.99, 2).expect("encode"), "zz");
        assert!(encode(91.0, 0.0, 4).is_err());
        assert!(encode(0.0, 181.0, 4).is_err());
        assert!(encode(f64::NAN, 0.0, 4).is_err());
    }

    #[test]
    fn decodes_known_geohashes() {
        // Wikipedia: ezs42 is about 42.6, -5.6.
        let (lat, lon) = decode("ezs42").expect("decode");
        assert!(
            (lat - 42.605).abs() < 0.03 && (lon - -5.603).abs() < 0.03,
            "{lat} {lon}"
        );
        let b = bounds("ezs42").expect("bounds");
        assert!(b.min_lat <= 42.6 && 42.6 <= b.max_lat && b.min_lon <= -5.6 && -5.6 <= b.max_lon);
        let (lat, lon) = decode("u4pruydqqvj").expect("decode");
        assert!((lat - 57.64911).abs() < 1e-5 && (lon - 10.40744).abs() < 1e-5);
        assert!(bounds("").is_err());
        assert!(bounds("abc").is_err(), "a is not in the geohash alphabet");
        assert!(bounds("u4pr%").is_err());
        assert!(bounds("0123456789bcd").is_err(), "longer than 12");
    }

    #[test]
    fn neighbours_of_known_cells() {
        // The ngeohash README example: dqcjq → n, ne, e, se, s, sw, w, nw.
        assert_eq!(
            neighbours("dqcjq").expect("neighbours"),
            ["dqcjw", "dqcjx", "dqcjr", "dqcjp", "dqcjn", "dqcjj", "dqcjm", "dqcjt"]
        );
        // The geohash crate's documented example.
        let n = neighbours("9q60y60rhs").expect("neighbours");
        assert_eq!(n[0], "9q60y60rht");
        assert_eq!(n[4], "9q60y60rhe");
        // Across the antimeridian the eastern neighbour wraps to the west.
        let east = &neighbours("xbpb").expect("neighbours")[2];
        assert!(east.starts_with('8'), "{east}");
        assert!(neighbours("u4p!").is_err());
    }

    #[test]
    fn distances_with_the_platform_radius() {
        let one_degree = EARTH_RADIUS_KM * std::f64::consts::PI / 180.0;
        assert!((distance(0.0, 0.0, 0.0, 1.0) - one_degree).abs() < 1e-9);
        assert!((distance(0.0, 0.0, 1.0, 0.0) - one_degree).abs() < 1e-9);
        assert_eq!(distance(10.0, 20.0, 10.0, 20.0), 0.0);
        // London to New York: 5570 km with R = 6371 km, scaled to R = 6378.1.
        let d = distance(51.5007, -0.1246, 40.6892, -74.0445);
        assert!((d - 5574.8 * EARTH_RADIUS_KM / 6371.0).abs() < 2.0, "{d}");
        // Antipodes: half the circumference.
        let half = distance(0.0, 0.0, 0.0, 180.0);
        assert!((half - EARTH_RADIUS_KM * std::f64::consts::PI).abs() < 1e-6);
        assert_eq!(round_down(17.9, 5.0), 15.0);
        assert_eq!(round_down(4.99, 5.0), 0.0);
        assert_eq!(round_down(4.99, 0.0), 4.99);
    }

    #[test]
    fn cell_lengths_follow_the_cell_sizes() {
        let (h, w) = cell_size_km(4);
        assert!(
            (h - 19.56).abs() < 0.1 && (w - 39.13).abs() < 0.1,
            "{h} {w}"
        );
        let (h5, w5) = cell_size_km(5);
        assert!(
            (h5 - 4.89).abs() < 0.05 && (w5 - 4.89).abs() < 0.05,
            "{h5} {w5}"
        );
        assert_eq!(cell_length(5.0), 4, "docs/data.md: 5 km → length 4");
        assert_eq!(cell_length(1.0), 5);
        assert_eq!(cell_length(50.0), 3);
        assert_eq!(cell_length(100_000.0), 1);
    }
}
