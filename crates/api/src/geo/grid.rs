//! The geohash cells that cover a search circle, each with the nearest and farthest any point
//! inside it can be from the centre (the nearest exact), nearest first. A search
//! reads cells in this order and can stop as soon as the next cell's lower bound is beyond the
//! farthest row it still needs; a cell whose upper bound is below a paging cursor holds only rows
//! already returned.
//!
//! The cell length is picked per search: the longest one that covers the circle with at most
//! `max_cells` cells, so a small radius reads small cells and a large one a few large cells. This
//! replaces the original walk of the centre cell and its eight neighbours, which misses points
//! when the radius is larger than a cell.

use super::hash::{check, distance, encode, GeoError, EARTH_RADIUS_KM, MAX_LENGTH};

/// One cell of a [`grid`].
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// The geohash of the cell: every point inside has a geohash starting with it.
    pub prefix: String,
    /// No point of the cell is closer to the centre than this (km).
    pub lower: f64,
    /// No point of the cell is farther from the centre than this (km).
    pub upper: f64,
}

/// Rows and columns of cells of length `len`, and the ranges they span.
struct Span {
    lat_bits: i32,
    lon_bits: i32,
    rows: (i64, i64),
    /// `None`: every column (the circle reaches a pole or goes all around).
    cols: Option<(i64, i64)>,
}

impl Span {
    fn new(lat: f64, lon: f64, radius: f64, len: usize) -> Span {
        let bits = 5 * len as i32;
        let lat_bits = bits / 2;
        let lon_bits = bits - lat_bits;
        let h = 180.0 / 2f64.powi(lat_bits);
        let w = 360.0 / 2f64.powi(lon_bits);
        let dlat = (radius / EARTH_RADIUS_KM).to_degrees();
        let lat_lo = (lat - dlat).max(-90.0);
        let lat_hi = (lat + dlat).min(90.0);
        let last_row = (1i64 << lat_bits) - 1;
        let row = |x: f64| (((x + 90.0) / h).floor() as i64).clamp(0, last_row);
        let rows = (row(lat_lo), row(lat_hi));
        let widest = lat_lo.abs().max(lat_hi.abs());
        // A parallel at the circle's most poleward latitude is the shortest it crosses, so the
        // longitude span there bounds it everywhere; one cell of margin for rounding.
        let cos = widest.to_radians().cos();
        let cols = if widest >= 89.9 || cos <= 1e-9 {
            None
        } else {
            let dlon = dlat / cos * 1.01 + w;
            if dlon >= 180.0 {
                None
            } else {
                let col = |x: f64| ((x + 180.0) / w).floor() as i64;
                Some((col(lon - dlon), col(lon + dlon)))
            }
        };
        Span {
            lat_bits,
            lon_bits,
            rows,
            cols,
        }
    }

    fn count(&self) -> u128 {
        let rows = (self.rows.1 - self.rows.0 + 1) as u128;
        let all = 1u128 << self.lon_bits;
        let cols = match self.cols {
            Some((a, b)) => ((b - a + 1) as u128).min(all),
            None => all,
        };
        rows * cols
    }
}

/// The cells covering the circle of `radius` km around (`lat`, `lon`), with at most `max_cells`
/// cells (fewer, larger ones when needed; length 1 whatever the count), sorted by their lower
/// distance bound. Cells entirely outside the circle are left out.
pub fn grid(lat: f64, lon: f64, radius: f64, max_cells: usize) -> Result<Vec<Cell>, GeoError> {
    grid_where(lat, lon, radius, max_cells, |_| true)
}

/// The cells of [`grid`] whose upper distance bound passes `keep` (a search leaves out the cells
/// an earlier round or page read): the others are dropped before their lower bound and geohash
/// are computed. Corner distances are computed once per grid node, not once per cell corner.
pub fn grid_where(
    lat: f64,
    lon: f64,
    radius: f64,
    max_cells: usize,
    keep: impl Fn(f64) -> bool,
) -> Result<Vec<Cell>, GeoError> {
    let mut out = cells_where(lat, lon, radius, max_cells, keep, true)?;
    out.sort_by(|a, b| {
        a.lower
            .total_cmp(&b.lower)
            .then_with(|| a.prefix.cmp(&b.prefix))
    });
    out.dedup_by(|a, b| a.prefix == b.prefix);
    Ok(out)
}

/// The prefixes of the cells of [`grid_where`], sorted as text (the order a key range read
/// wants), without the work a reader of prefixes does not need: a cell entirely inside the
/// circle (its upper bound within the radius) is kept without computing its lower bound, and
/// nothing is sorted by distance.
pub fn grid_prefixes(
    lat: f64,
    lon: f64,
    radius: f64,
    max_cells: usize,
    keep: impl Fn(f64) -> bool,
) -> Result<Vec<String>, GeoError> {
    let mut out: Vec<String> = cells_where(lat, lon, radius, max_cells, keep, false)?
        .into_iter()
        .map(|c| c.prefix)
        .collect();
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The cells of [`grid_where`] in grid order (row by row), unsorted and possibly repeated
/// (columns wrapping the antimeridian). `exact`: every cell gets its lower bound; else a cell
/// whose upper bound is within the radius gets 0.
fn cells_where(
    lat: f64,
    lon: f64,
    radius: f64,
    max_cells: usize,
    keep: impl Fn(f64) -> bool,
    exact: bool,
) -> Result<Vec<Cell>, GeoError> {
    check(lat, lon)?;
    let radius = if radius.is_finite() {
        radius.max(0.0)
    } else {
        0.0
    };
    let (len, span) = (1..=MAX_LENGTH)
        .rev()
        .map(|len| (len, Span::new(lat, lon, radius, len)))
        .find(|(len, s)| *len == 1 || s.count() <= max_cells.max(1) as u128)
        .expect("length 1 always qualifies");
    let h = 180.0 / 2f64.powi(span.lat_bits);
    let w = 360.0 / 2f64.powi(span.lon_bits);
    let ncols = 1i64 << span.lon_bits;
    let cols: Vec<i64> = match span.cols {
        Some((a, b)) if b - a + 1 < ncols => (a..=b).map(|j| j.rem_euclid(ncols)).collect(),
        _ => (0..ncols).collect(),
    };
    let wide = w >= 90.0 || h >= 90.0;
    // The distances from the centre to the (west, east) corners of each column along the row
    // edge `edge`: a column's east corner is the next one's west corner (the same longitude
    // computed the same way) unless the columns wrap around the antimeridian there.
    let corners = |edge: i64, out: &mut Vec<(f64, f64)>| {
        let a = -90.0 + edge as f64 * h;
        out.clear();
        let mut last: Option<(i64, f64)> = None;
        for &j in &cols {
            let west = match last {
                Some((k, d)) if k == j => d,
                _ => distance(lat, lon, a, -180.0 + j as f64 * w),
            };
            let east = distance(lat, lon, a, -180.0 + (j + 1) as f64 * w);
            last = Some((j + 1, east));
            out.push((west, east));
        }
    };
    let (mut south, mut north) = (Vec::new(), Vec::new());
    if !wide {
        corners(span.rows.0, &mut south);
    }
    let mut out = Vec::new();
    for i in span.rows.0..=span.rows.1 {
        let (s, n) = (-90.0 + i as f64 * h, -90.0 + (i + 1) as f64 * h);
        if !wide {
            corners(i + 1, &mut north);
        }
        for (p, &j) in cols.iter().enumerate() {
            let (west, east) = (-180.0 + j as f64 * w, -180.0 + (j + 1) as f64 * w);
            let upper = if wide {
                bounds(lat, lon, s, n, west, east).1
            } else {
                let ((sw, se), (nw, ne)) = (south[p], north[p]);
                [sw, se, nw, ne].into_iter().fold(0.0, f64::max) + SLACK
            };
            if !keep(upper) {
                continue;
            }
            let lower = if wide {
                bounds(lat, lon, s, n, west, east).0
            } else if !exact && upper <= radius {
                0.0
            } else {
                lower_bound(lat, lon, s, n, west, east)
            };
            if lower > radius {
                continue;
            }
            let (clat, clon) = ((s + n) / 2.0, (west + east) / 2.0);
            out.push(Cell {
                prefix: encode(clat, clon, len)?,
                lower,
                upper,
            });
        }
        std::mem::swap(&mut south, &mut north);
    }
    Ok(out)
}

/// Slack (km) that keeps the bounds safe from floating-point rounding.
const SLACK: f64 = 1e-6;

/// The nearest and the farthest a point of the rectangle `s..n` × `west..east` can be from
/// (`lat`, `lon`), in km. The nearest is exact: straight north or south when the point is within
/// the rectangle's longitudes; else on the nearer meridian edge, where the distance along the
/// edge is smallest at latitude atan(tan φ / cos Δλ). The farthest is a corner. Rectangles a
/// quarter of the globe wide fall back to the centre's distance ± its reach.
fn bounds(lat: f64, lon: f64, s: f64, n: f64, west: f64, east: f64) -> (f64, f64) {
    let (clat, clon) = ((s + n) / 2.0, (west + east) / 2.0);
    let corners = [(s, west), (s, east), (n, west), (n, east)];
    if east - west >= 90.0 || n - s >= 90.0 {
        let reach = corners
            .iter()
            .map(|&(a, b)| distance(clat, clon, a, b))
            .fold(0.0, f64::max);
        let centre = distance(lat, lon, clat, clon);
        return ((centre - reach - SLACK).max(0.0), centre + reach + SLACK);
    }
    let lower = lower_bound(lat, lon, s, n, west, east);
    let upper = corners
        .iter()
        .map(|&(a, b)| distance(lat, lon, a, b))
        .fold(0.0, f64::max);
    (lower, upper + SLACK)
}

/// The nearest a point of the rectangle `s..n` × `west..east` (narrower than a quarter of the
/// globe) can be from (`lat`, `lon`), in km, less [`SLACK`] ([`bounds`]).
fn lower_bound(lat: f64, lon: f64, s: f64, n: f64, west: f64, east: f64) -> f64 {
    // Longitude offsets from the point to each edge, in (-180, 180].
    let off = |x: f64| {
        let d = (x - lon).rem_euclid(360.0);
        if d > 180.0 {
            d - 360.0
        } else {
            d
        }
    };
    let (dw, de) = (off(west), off(east));
    let inside_lon = dw <= 0.0 && de >= 0.0 && de - dw <= 180.0;
    let lower = if inside_lon {
        (lat - lat.clamp(s, n)).abs().to_radians() * EARTH_RADIUS_KM
    } else {
        let (edge, dl) = if dw.abs() <= de.abs() {
            (west, dw)
        } else {
            (east, de)
        };
        if dl.abs() >= 90.0 {
            0.0
        } else {
            let best = (lat.to_radians().tan() / dl.to_radians().cos())
                .atan()
                .to_degrees();
            distance(lat, lon, best.clamp(s, n), edge)
        }
    };
    (lower - SLACK).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// A random point within `radius` km of the centre (rejection sampling in the bounding box).
    fn point_near(rng: &mut rand::rngs::StdRng, lat: f64, lon: f64, radius: f64) -> (f64, f64) {
        let dlat = (radius / EARTH_RADIUS_KM).to_degrees();
        let dlon = (dlat / lat.to_radians().cos().max(0.01)).min(180.0);
        loop {
            let p = (
                (lat + rng.gen_range(-dlat..=dlat)).clamp(-90.0, 90.0),
                lon + rng.gen_range(-dlon..=dlon),
            );
            let p = (p.0, (p.1 + 540.0).rem_euclid(360.0) - 180.0);
            if distance(lat, lon, p.0, p.1) <= radius {
                return p;
            }
        }
    }

    fn covers(lat: f64, lon: f64, radius: f64, max_cells: usize, seed: u64) {
        let cells = grid(lat, lon, radius, max_cells).expect("grid");
        assert!(!cells.is_empty());
        assert!(cells.len() <= max_cells.max(32), "{} cells", cells.len());
        assert!(cells.windows(2).all(|w| w[0].lower <= w[1].lower), "sorted");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for _ in 0..2000 {
            let (plat, plon) = point_near(&mut rng, lat, lon, radius);
            let hash = encode(plat, plon, MAX_LENGTH).expect("encode");
            let d = distance(lat, lon, plat, plon);
            let cell = cells
                .iter()
                .find(|c| hash.starts_with(&c.prefix))
                .unwrap_or_else(|| panic!("({plat}, {plon}) at {d} km is in no cell of {cells:?}"));
            assert!(cell.lower <= d && d <= cell.upper, "{d} outside {cell:?}");
        }
    }

    #[test]
    fn every_point_inside_the_circle_is_in_a_cell_within_its_bounds() {
        covers(40.7, -74.0, 5.0, 32, 1);
        covers(40.7, -74.0, 50.0, 32, 2);
        covers(-33.9, 151.2, 20.0, 16, 3);
        covers(0.0, 0.0, 1.0, 32, 4);
        covers(60.0, 10.0, 0.05, 32, 5);
    }

    #[test]
    fn the_antimeridian_and_the_poles_are_covered() {
        covers(0.0, 179.99, 30.0, 32, 6);
        covers(-10.0, -179.95, 30.0, 32, 7);
        covers(89.8, 45.0, 50.0, 32, 8);
        covers(-89.99, 0.0, 10.0, 32, 9);
    }

    #[test]
    fn bounds_are_tight() {
        // Brute force over a dense sampling of each cell's area and edges.
        let cases = [
            (40.7, -74.0, "dr5r"),
            (40.7, -74.0, "dr72"),
            (40.7, -74.0, "dr5x"),
            (-33.9, 151.2, "r3gx"),
            (10.0, 179.9, "8000"),
        ];
        for (lat, lon, hash) in cases {
            let b = super::super::bounds(hash).expect("cell");
            let (lo, hi) = bounds(lat, lon, b.min_lat, b.max_lat, b.min_lon, b.max_lon);
            let (mut min, mut max) = (f64::MAX, 0.0f64);
            for i in 0..=200 {
                for j in 0..=200 {
                    let p = (
                        b.min_lat + (b.max_lat - b.min_lat) * i as f64 / 200.0,
                        b.min_lon + (b.max_lon - b.min_lon) * j as f64 / 200.0,
                    );
                    let d = distance(lat, lon, p.0, p.1);
                    min = min.min(d);
                    max = max.max(d);
                }
            }
            assert!(
                lo <= min + 1e-9 && min - lo < 0.2,
                "{hash}: lower {lo} vs {min}"
            );
            assert!(
                hi >= max - 1e-9 && hi - max < 1e-3,
                "{hash}: upper {hi} vs {max}"
            );
        }
    }

    /// The cells as computed before the corner distances were shared: every corner of every
    /// cell, then the filter.
    fn reference(lat: f64, lon: f64, radius: f64, max_cells: usize) -> Vec<Cell> {
        let (len, span) = (1..=MAX_LENGTH)
            .rev()
            .map(|len| (len, Span::new(lat, lon, radius, len)))
            .find(|(len, s)| *len == 1 || s.count() <= max_cells as u128)
            .expect("length 1 always qualifies");
        let h = 180.0 / 2f64.powi(span.lat_bits);
        let w = 360.0 / 2f64.powi(span.lon_bits);
        let ncols = 1i64 << span.lon_bits;
        let cols: Vec<i64> = match span.cols {
            Some((a, b)) if b - a + 1 < ncols => (a..=b).map(|j| j.rem_euclid(ncols)).collect(),
            _ => (0..ncols).collect(),
        };
        let mut out = Vec::new();
        for i in span.rows.0..=span.rows.1 {
            let (s, n) = (-90.0 + i as f64 * h, -90.0 + (i + 1) as f64 * h);
            for &j in &cols {
                let (west, east) = (-180.0 + j as f64 * w, -180.0 + (j + 1) as f64 * w);
                let prefix = encode((s + n) / 2.0, (west + east) / 2.0, len).expect("encode");
                let (lower, upper) = bounds(lat, lon, s, n, west, east);
                if lower <= radius {
                    out.push(Cell {
                        prefix,
                        lower,
                        upper,
                    });
                }
            }
        }
        out.sort_by(|a, b| {
            a.lower
                .total_cmp(&b.lower)
                .then_with(|| a.prefix.cmp(&b.prefix))
        });
        out.dedup_by(|a, b| a.prefix == b.prefix);
        out
    }

    #[test]
    fn shared_corners_and_the_filter_give_the_same_cells_bit_for_bit() {
        let cases = [
            (37.77, -122.42, 10.0 / 32.0, 256),
            (37.77, -122.42, 1.25, 256),
            (37.77, -122.42, 5.0, 256),
            (37.77, -122.42, 10.0, 256),
            (40.7, -74.0, 50.0, 32),
            (0.0, 179.99, 30.0, 32),
            (-10.0, -179.95, 30.0, 256),
            (89.8, 45.0, 50.0, 32),
            (-89.99, 0.0, 10.0, 32),
            (0.0, 0.0, 20000.0, 8),
        ];
        for (lat, lon, r, max) in cases {
            let want = reference(lat, lon, r, max);
            let got = grid(lat, lon, r, max).expect("grid");
            assert_eq!(got, want, "({lat}, {lon}) r {r}");
            for c in &want {
                let bits = |x: &Cell| (x.lower.to_bits(), x.upper.to_bits());
                let g = got.iter().find(|x| x.prefix == c.prefix).expect("cell");
                assert_eq!(bits(g), bits(c), "{}", c.prefix);
            }
            let cut = r / 2.0;
            let kept = grid_where(lat, lon, r, max, |u| u > cut).expect("grid");
            let filtered: Vec<Cell> = want.into_iter().filter(|c| c.upper > cut).collect();
            assert_eq!(kept, filtered, "({lat}, {lon}) r {r} beyond {cut}");
        }
    }

    #[test]
    fn prefixes_are_the_cells_prefixes_sorted() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..300 {
            let (lat, lon) = (rng.gen_range(-89.9..89.9), rng.gen_range(-180.0..180.0));
            let r = rng.gen_range(0.0..3000.0f64).powf(rng.gen_range(0.3..1.0));
            let cut = r * rng.gen_range(0.0..1.0);
            let max = [16, 64, 256][rng.gen_range(0..3)];
            let mut want: Vec<String> = grid_where(lat, lon, r, max, |u| u > cut)
                .expect("grid")
                .into_iter()
                .map(|c| c.prefix)
                .collect();
            want.sort();
            let got = grid_prefixes(lat, lon, r, max, |u| u > cut).expect("prefixes");
            assert_eq!(got, want, "{lat} {lon} r {r} cut {cut} max {max}");
        }
    }

    #[test]
    fn small_circles_use_small_cells() {
        let small = grid(40.7, -74.0, 5.0, 32).expect("grid");
        let large = grid(40.7, -74.0, 50.0, 32).expect("grid");
        assert!(
            small[0].prefix.len() > large[0].prefix.len(),
            "{small:?} {large:?}"
        );
        assert_eq!(small[0].lower, 0.0, "the centre's cell comes first");
        assert!(small.iter().all(|c| c.lower <= 5.0));
        assert!(grid(95.0, 0.0, 5.0, 32).is_err());
    }
}
