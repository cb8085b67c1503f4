//! `/location/*` and `/account/select/location` (docs/api.md, §8): where accounts are and who is
//! near a point. `/location/put` stores the caller's point in `bk_account` and in `bk_location`
//! (key: the full-precision geohash and the id), ignoring moves within `-min-distance` (305).
//! A search returns the rows within `distance` km (clamped to [min-distance, max-distance]) of
//! a point, nearest first, in pages, never the caller's own row: it reads growing circles, each
//! as the key ranges of the cells of [`crate::geo::grid`](mod@crate::geo::grid) that cover it
//! ([`bkjs_db::Db::select_prefixes`]: SQLite runs one small cached statement per range,
//! PostgreSQL all of them in one round trip), until
//! the page is complete (see [`search`]), and its `next_token` holds the search and the last row
//! returned (distance, id), so the next page goes on exactly after it whichever cells that
//! takes. Other accounts' rows show only `id`, `alias` and `distance` (rounded down to `_round`,
//! default min-distance).

use super::common::query::request;
use super::common::rows::{db_of, details, flag, for_client, list, public_only, row, text};
use crate::api::{Req, Routes};
use crate::error::ApiError;
use crate::geo;
use crate::hooks::{AccountDeletion, HookFuture};
use crate::reply::Out;
use crate::route::RouteError;
use bkjs_db::{Db, Options, Row};
use hyper::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

/// Cells one round of a search reads at most (it picks the cell size to stay within this).
/// Fewer, larger cells cost more than they save: at 128 the bench search read twice the rows,
/// and the rows' cost outweighed the cells saved (docs/performance.md).
const MAX_CELLS: usize = 256;

/// The radius of a search's first round, as a fraction of the search radius.
const FIRST_ROUND: f64 = 1.0 / 32.0;

/// Registers the location group and `/account/select/location`.
pub(crate) fn register(r: &mut Routes) -> Result<(), RouteError> {
    r.add(
        "*",
        "/location/put",
        "store the caller's latitude and longitude (305 when within -min-distance of the last one)",
        put,
    )?;
    r.add(
        "*",
        "/location/get",
        "locations within distance km of latitude/longitude, nearest first, paged (_count, _start, _round, _details)",
        |req| async move { get(req, "bk_location").await },
    )?;
    r.add(
        "*",
        "/account/select/location",
        "accounts within distance km of latitude/longitude, nearest first, as /location/get",
        |req| async move { get(req, "bk_account").await },
    )?;
    r.on_account_delete(on_account_delete);
    Ok(())
}

fn number(req: &Req, name: &str) -> Result<Option<f64>, ApiError> {
    match req.param(name).filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .map(Some)
            .ok_or_else(|| ApiError::bad(format!("{name} must be a number"))),
    }
}

fn coordinates(req: &Req) -> Result<(f64, f64), ApiError> {
    let missing = || ApiError::bad("latitude and longitude are required");
    let lat = number(req, "latitude")?.ok_or_else(missing)?;
    let lon = number(req, "longitude")?.ok_or_else(missing)?;
    geo::encode(lat, lon, 1).map_err(|e| ApiError::bad(e.to_string()))?;
    Ok((lat, lon))
}

fn float(r: &Row, col: &str) -> Option<f64> {
    match r.get(col)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Stores the point of account `id` (bk_account and bk_location); a move within `min_distance`
/// km of the stored point is ignored with 305. Answers the location row.
pub async fn put_location(
    db: &Db,
    min_distance: f64,
    id: &str,
    lat: f64,
    lon: f64,
) -> Result<Row, ApiError> {
    let hash = geo::encode(lat, lon, geo::MAX_LENGTH).map_err(|e| ApiError::bad(e.to_string()))?;
    let o = Options::default();
    let old = db
        .get("bk_account", &row(&[("id", id)]), &o)
        .await?
        .ok_or_else(|| ApiError::not_found("no such account"))?;
    if let (Some(a), Some(b)) = (float(&old, "latitude"), float(&old, "longitude")) {
        if geo::distance(a, b, lat, lon) <= min_distance {
            return Err(ApiError::new(
                StatusCode::USE_PROXY,
                format!("ignored, min distance: {min_distance} km"),
            ));
        }
    }
    let now = bkjs_base::time::now_ms();
    let mut loc = row(&[
        ("geohash", &hash),
        ("id", id),
        ("alias", text(&old, "alias")),
    ]);
    loc.insert("latitude".into(), json!(lat));
    loc.insert("longitude".into(), json!(lon));
    db.put("bk_location", &loc, &o).await?;
    let mut account = row(&[("id", id), ("geohash", &hash)]);
    account.insert("latitude".into(), json!(lat));
    account.insert("longitude".into(), json!(lon));
    account.insert("ltime".into(), json!(now));
    if let Err(e) = db.update("bk_account", &account, &o).await {
        let _ = db.del("bk_location", &loc, &o).await;
        return Err(e.into());
    }
    let previous = text(&old, "geohash");
    if !previous.is_empty() && previous != hash {
        if let Err(e) = db
            .del(
                "bk_location",
                &row(&[("geohash", previous), ("id", id)]),
                &o,
            )
            .await
        {
            tracing::warn!("location of {id}: the old row {previous} stays: {e}");
        }
    }
    loc.insert("mtime".into(), json!(now));
    Ok(loc)
}

/// `/location/put`.
async fn put(req: Arc<Req>) -> Result<Out, ApiError> {
    let db = db_of(&req)?;
    let me = req.account()?;
    let (lat, lon) = coordinates(&req)?;
    let min = req.api.cfg.number("min-distance");
    let loc = put_location(db, min, me.id(), lat, lon).await?;
    Ok(Out::Json(Value::Object(loc)))
}

/// One search, as asked or as carried on by a token.
#[derive(Debug, Clone, PartialEq)]
struct Search {
    lat: f64,
    lon: f64,
    /// Radius, km.
    d: f64,
    /// The last row returned: its distance and id.
    after: Option<(f64, String)>,
}

/// A token's form of a [`Search`]: numbers as Rust's shortest round-trip text, so the next page
/// computes bit-identical distances and compares them with the cursor exactly (JSON numbers
/// may come back one unit in the last place off).
#[derive(serde::Serialize, serde::Deserialize)]
struct Token {
    lat: String,
    lon: String,
    d: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after: Option<(String, String)>,
}

impl Search {
    fn token(&self) -> String {
        let t = Token {
            lat: self.lat.to_string(),
            lon: self.lon.to_string(),
            d: self.d.to_string(),
            after: self
                .after
                .as_ref()
                .map(|(d, id)| (d.to_string(), id.clone())),
        };
        let text = serde_json::to_string(&t).expect("a token serializes");
        hex::encode(text.as_bytes())
    }

    fn from_token(t: &str) -> Result<Search, ApiError> {
        let bad = || ApiError::bad("malformed paging token");
        if t.len() % 2 != 0 || t.len() > 2048 {
            return Err(bad());
        }
        let bytes: Vec<u8> = (0..t.len())
            .step_by(2)
            .map(|i| t.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect::<Option<_>>()
            .ok_or_else(bad)?;
        let t: Token = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        let num = |s: &str| {
            s.parse::<f64>()
                .ok()
                .filter(|n| n.is_finite())
                .ok_or_else(bad)
        };
        let s = Search {
            lat: num(&t.lat)?,
            lon: num(&t.lon)?,
            d: num(&t.d)?,
            after: match &t.after {
                Some((d, id)) => Some((num(d)?, id.clone())),
                None => None,
            },
        };
        geo::encode(s.lat, s.lon, 1).map_err(|_| bad())?;
        if s.d < 0.0 {
            return Err(bad());
        }
        Ok(s)
    }

    /// From `_start`/`_token`, else latitude, longitude and distance (clamped).
    fn of(req: &Req) -> Result<Search, ApiError> {
        let cfg = &req.api.cfg;
        let (min, max) = (cfg.number("min-distance"), cfg.number("max-distance"));
        let token = req
            .param("_start")
            .or_else(|| req.param("_token"))
            .filter(|t| !t.is_empty());
        let clamp = |d: f64| d.max(min).min(max.max(min));
        if let Some(t) = token {
            let mut s = Search::from_token(t)?;
            s.d = clamp(s.d);
            return Ok(s);
        }
        let (lat, lon) = coordinates(req)?;
        let d = clamp(number(req, "distance")?.unwrap_or(min));
        Ok(Search {
            lat,
            lon,
            d,
            after: None,
        })
    }
}

/// One page of a search on `table` (rows with geohash, latitude, longitude and id), nearest
/// first, with the token of the next page when more rows are within the radius. Rows of account
/// `skip` (the caller) are never part of it.
///
/// It reads in rounds, each ONE prefix read of the cells covering a circle ([`geo::grid`], at
/// most [`MAX_CELLS`] cells, as a list of geohash prefixes): the first circle is small (a 32nd of the
/// radius, or a little past the cursor of a later page), and each next one is sized from how
/// many rows the last held, until the page plus one row lies within it or it reaches the
/// radius. Rows within a round's circle are all known after it, so a page needs no more; cells
/// entirely inside an earlier round's circle are not read again. A dense area is answered from a
/// small circle of small cells, a sparse one from a few rounds of larger ones.
async fn search(
    db: &Db,
    table: &str,
    s: &Search,
    count: usize,
    skip: &str,
    select: Vec<String>,
) -> Result<(Vec<(f64, Row)>, Option<String>), ApiError> {
    let after = s.after.as_ref();
    let beyond = |d: f64, id: &str| match after {
        None => true,
        Some((ad, aid)) => d.total_cmp(ad).then_with(|| id.cmp(aid.as_str())).is_gt(),
    };
    let base = after.map_or(0.0, |(d, _)| *d).clamp(0.0, s.d);
    let mut found: Vec<(f64, String, Row)> = Vec::new();
    // An account can have two rows: a move puts the new one before it deletes the old one (and
    // a failed delete leaves it), and ranges and rounds are separate reads. It is answered once,
    // at its nearest row (a later round reads only rows beyond an earlier one's circle).
    // Keyed by the id's hash (no copy of the id per row read); a hit is confirmed by the id.
    let hasher = foldhash::fast::FixedState::default();
    let mut seen: HashMap<u64, usize, foldhash::fast::FixedState> = HashMap::default();
    let opts = Options {
        select,
        ..Options::default()
    };
    // Every row within `done` km was read by an earlier round (none yet).
    let mut done = -1.0f64;
    let mut r = if base > 0.0 {
        (base * std::f64::consts::SQRT_2).max(base + s.d * FIRST_ROUND)
    } else {
        s.d * FIRST_ROUND
    };
    loop {
        r = r.min(s.d);
        // Cells read by an earlier round, or every row of which was on an earlier page, are
        // left out before their bounds and geohash are computed.
        let read = |upper: f64| upper > done && !after.is_some_and(|(ad, _)| upper < *ad);
        let prefixes = geo::grid::grid_prefixes(s.lat, s.lon, r, MAX_CELLS, read)
            .map_err(|e| ApiError::bad(e.to_string()))?;
        if !prefixes.is_empty() {
            // Each cell's key range read apart (in no order: the page is sorted below).
            for item in db
                .select_prefixes(table, "geohash", &prefixes, &opts)
                .await?
            {
                let (Some(lat), Some(lon)) = (float(&item, "latitude"), float(&item, "longitude"))
                else {
                    continue;
                };
                let d = geo::distance(s.lat, s.lon, lat, lon);
                let id = text(&item, "id");
                if d > done && d <= r && id != skip && beyond(d, id) {
                    let key = hasher.hash_one(id);
                    match seen.get(&key) {
                        Some(&i) if found[i].1 == id => {
                            if d < found[i].0 {
                                found[i] = (d, id.to_string(), item);
                            }
                        }
                        // Another account with the same 64-bit hash: kept, not compared.
                        Some(_) => found.push((d, id.to_string(), item)),
                        None => {
                            seen.insert(key, found.len());
                            found.push((d, id.to_string(), item));
                        }
                    }
                }
            }
        }
        done = r;
        if found.len() > count || r >= s.d {
            break;
        }
        // The next circle: the area so far grown by what the page still needs (with margin),
        // at least doubled and at most 16 times.
        let area = r * r - base * base;
        let grow = if found.is_empty() {
            16.0
        } else {
            ((count + 1) as f64 / found.len() as f64 * 1.5).clamp(2.0, 16.0)
        };
        r = (base * base + area.max(f64::MIN_POSITIVE) * grow)
            .sqrt()
            .max(r * 1.1);
    }
    let order = |a: &(f64, String, Row), b: &(f64, String, Row)| {
        a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1))
    };
    found.sort_by(order);
    let next = (found.len() > count).then(|| {
        let (d, id, _) = &found[count - 1];
        Search {
            after: Some((*d, id.clone())),
            ..s.clone()
        }
        .token()
    });
    found.truncate(count);
    Ok((found.into_iter().map(|(d, _, r)| (d, r)).collect(), next))
}

/// `/location/get` (table bk_location), `/account/select/location` (bk_account). The caller's
/// own row is never part of the answer (docs/api.md).
async fn get(req: Arc<Req>, table: &'static str) -> Result<Out, ApiError> {
    let db = db_of(&req)?;
    let me = req.account()?;
    let s = Search::of(&req)?;
    let (_, opts) = request(&req.params)?;
    let round = match number(&req, "_round")? {
        Some(r) if r >= 0.0 => r,
        Some(_) => return Err(ApiError::bad("_round must be at least 0")),
        None => req.api.cfg.number("min-distance"),
    };
    let admin = me.is_admin();
    // Others' location rows show only id and alias: the search reads no more than that and the
    // point (admins see whole rows).
    let select = if table == "bk_location" && !admin {
        ["id", "alias", "latitude", "longitude"]
            .map(String::from)
            .to_vec()
    } else {
        Vec::new()
    };
    let (found, next) = search(db, table, &s, opts.page_size().min(100), me.id(), select).await?;
    let t = db.table(table)?;
    let mut rows: Vec<Row> = found
        .into_iter()
        .map(|(d, mut r)| {
            if !admin {
                if table == "bk_location" {
                    r.retain(|k, _| k == "id" || k == "alias");
                } else {
                    public_only(&t, &mut r);
                }
            } else if table == "bk_account" {
                for_client(&t, &mut r, admin);
            }
            r.insert("distance".into(), json!(geo::round_down(d, round)));
            r
        })
        .collect();
    if flag(&req, "_details") && table == "bk_location" {
        details(db, &mut rows, "id").await?;
    }
    Ok(Out::Json(list(rows, next)))
}

/// Removes every location row of account `id` (`/account/del`).
pub(crate) async fn delete_account(db: &Db, id: &str) -> Result<(), bkjs_db::DbError> {
    let opts = Options {
        count: 500,
        noscan: false,
        ..Options::default()
    };
    db.del_all("bk_location", &row(&[("id", id)]), &opts)
        .await?;
    Ok(())
}

/// Account deletion: removes the account's `bk_location` rows (keyed by geohash) unless kept.
fn on_account_delete<'a>(d: &'a AccountDeletion<'a>) -> HookFuture<'a> {
    Box::pin(async move {
        if d.kept("bk_location") {
            return Ok(());
        }
        delete_account(d.db, d.id).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_the_search_exactly() {
        let s = Search {
            lat: 0.1 + 0.2,
            lon: -179.99999999999997,
            d: std::f64::consts::PI * 10.0,
            after: Some((7.000000000000001, "id-1".into())),
        };
        let back = Search::from_token(&s.token()).expect("token");
        assert_eq!(back, s, "bit for bit");
        assert_eq!(
            back.after.as_ref().map(|a| a.0.to_bits()),
            Some(7.000000000000001f64.to_bits())
        );
        for bad in [
            "",
            "zz",
            "7b7d",
            &hex::encode(br#"{"lat":"95","lon":"0","d":"5"}"#),
        ] {
            assert!(Search::from_token(bad).is_err(), "{bad}");
        }
    }
}
