//! Icons (docs/api.md): `/icon/*` with a `prefix`, the account's own `/account/*/icon` (prefix
//! `account`, type `0`-`9` or `a`-`z`), and `/image/PREFIX/ID/TYPE`. An icon is a `bk_icon` row
//! (`id`, `type` = `PREFIX:TYPE`, `acl_allow`, `ext`, ...) and a file
//! `images/PREFIX/XX/YY/TYPE-ID.EXT`, where XX and YY are the last four digits of the id, so no
//! directory grows without bound.
//!
//! Uploads come as a base64 `icon` query or form parameter, a base64 `icon` field of a JSON body,
//! or a multipart file; they are decoded, resized and re-encoded in process ([`crate::image`]),
//! so what is stored is always a valid image of the asked size and format. Reads check
//! `acl_allow`: "" = the owner only, `all` = anyone (even without a signature where the path is
//! open), `auth` = any signed-in account, else a comma-separated list of account ids.
//! Admins read everything. Every path part is validated before any file is touched.

use super::common::files::{
    convert, convert_params, icon_path, remove_file, send_file, upload_of, write_file,
};
use super::common::query::request;
use super::common::rows::{db_of, list, row, rows_of_type, text};
use crate::api::{Req, Routes};
use crate::auth::Account;
use crate::error::ApiError;
use crate::hooks::{AccountDeletion, HookFuture};
use crate::image::Format;
use crate::reply::Out;
use crate::route::RouteError;
use bkjs_db::{Db, DbError, Op, Options, Row};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;

/// Registers the icon group and the account icon endpoints.
pub(crate) fn register(r: &mut Routes) -> Result<(), RouteError> {
    r.add(
        "*",
        "/icon/get",
        "the image of icon prefix+type of the caller or account id (acl_allow checked)",
        |req| async move { get(req, None).await },
    )?;
    r.add(
        "*",
        "/icon/select",
        "icons of prefix (type a prefix) of the caller or account id, readable ones only",
        |req| async move { select(req, None).await },
    )?;
    for op in ["put", "upload"] {
        r.add(
            "*",
            &format!("/icon/{op}"),
            "store icon prefix+type from icon= (base64), a JSON icon field or a multipart file: _width, _height (negative: never upscale), _ext jpg|png|gif|webp, _quality; acl_allow, descr, latitude, longitude",
            |req| async move { put(req, None).await },
        )?;
    }
    r.add(
        "*",
        "/icon/del",
        "delete icon prefix+type of the caller",
        |req| async move { del(req, None).await },
    )?;
    r.add(
        "*",
        "/account/get/icon",
        "the image of the caller's (or account id's) icon type (0-9, a-z; default 0)",
        |req| async move { get(req, Some("account")).await },
    )?;
    r.add(
        "*",
        "/account/select/icon",
        "the account icons of the caller or account id",
        |req| async move { select(req, Some("account")).await },
    )?;
    r.add(
        "*",
        "/account/put/icon",
        "store the caller's icon type (0-9, a-z; default 0), as /icon/put",
        |req| async move { put(req, Some("account")).await },
    )?;
    r.add(
        "*",
        "/account/del/icon",
        "delete the caller's icon type",
        |req| async move { del(req, Some("account")).await },
    )?;
    r.add(
        "GET",
        "/image/{prefix}/{id}/{type}",
        "the image of an icon (acl_allow checked; open to anyone for acl all where -api-allow-path allows ^/image/)",
        image,
    )?;
    r.on_account_delete(on_account_delete);
    Ok(())
}

/// A request's icon address: prefix, owner id and type.
struct Name {
    prefix: String,
    id: String,
    kind: String,
}

fn check_prefix(p: &str) -> Result<(), ApiError> {
    let ok = !p.is_empty()
        && p.len() <= 32
        && p.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad("prefix must be 1-32 of a-z, 0-9 and _"))
    }
}

fn check_owner(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad(
            "id must be 1-128 of letters, digits, _ and -",
        ))
    }
}

fn check_kind(prefix: &str, t: &str) -> Result<(), ApiError> {
    if prefix == "account" {
        let one = t.len() == 1
            && t.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        return if one {
            Ok(())
        } else {
            Err(ApiError::bad("account icon type must be one of 0-9 or a-z"))
        };
    }
    let ok = t.len() <= 64
        && t.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b':'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad(
            "type must be at most 64 of letters, digits, _, - and :",
        ))
    }
}

impl Name {
    /// From the request: `prefix` (fixed for the account endpoints), `id` (default: the caller),
    /// `type` (default "" or, for account icons, "0").
    fn of(req: &Req, fixed: Option<&str>) -> Result<Name, ApiError> {
        let prefix = match fixed {
            Some(p) => p.to_string(),
            None => req.required("prefix")?.to_string(),
        };
        let id = match req.param("id").filter(|i| !i.is_empty()) {
            Some(i) => i.to_string(),
            None => req.account()?.id().to_string(),
        };
        let default = if prefix == "account" { "0" } else { "" };
        let kind = req
            .param("type")
            .filter(|t| !t.is_empty())
            .unwrap_or(default)
            .to_string();
        Name::checked(prefix, id, kind)
    }

    fn checked(prefix: String, id: String, kind: String) -> Result<Name, ApiError> {
        check_prefix(&prefix)?;
        check_owner(&id)?;
        check_kind(&prefix, &kind)?;
        Ok(Name { prefix, id, kind })
    }

    fn key(&self) -> Row {
        row(&[
            ("id", &self.id),
            ("type", &format!("{}:{}", self.prefix, self.kind)),
        ])
    }
}

/// Whether `caller` may read an icon of `owner` with this `acl_allow`.
pub(crate) fn allowed(acl: &str, owner: &str, caller: Option<&Account>) -> bool {
    if caller.is_some_and(|c| c.is_admin() || c.id() == owner) {
        return true;
    }
    match acl.trim() {
        "all" => true,
        "auth" => caller.is_some(),
        "" => false,
        list => caller.is_some_and(|c| list.split(',').any(|x| x.trim() == c.id())),
    }
}

fn content_type(ext: &str) -> &'static str {
    Format::parse(ext)
        .map(Format::content_type)
        .unwrap_or("application/octet-stream")
}

/// Whether `path` needs no signature (`-api-allow`, `-api-allow-path`).
fn is_open(req: &Req, path: &str) -> bool {
    let cfg = &req.api.cfg;
    cfg.regexps("api-allow")
        .iter()
        .chain(cfg.regexps("api-allow-path"))
        .any(|rx| rx.is_match(path))
}

/// A stored row as clients see it: `prefix` and `type` split, the `url` to fetch the image.
fn format(req: &Req, mut r: Row) -> Row {
    let stored = text(&r, "type").to_string();
    let (prefix, kind) = stored.split_once(':').unwrap_or(("", stored.as_str()));
    let (prefix, kind) = (prefix.to_string(), kind.to_string());
    let id = text(&r, "id").to_string();
    let image = format!("/image/{prefix}/{id}/{kind}");
    let mine = req.account.as_ref().is_some_and(|a| a.id() == id);
    let url = if text(&r, "acl_allow") == "all" && is_open(req, &image) {
        image
    } else {
        let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let mut u = if prefix == "account" {
            format!("/account/get/icon?type={}", enc(&kind))
        } else {
            format!("/icon/get?prefix={}&type={}", enc(&prefix), enc(&kind))
        };
        if !mine {
            u.push_str(&format!("&id={}", enc(&id)));
        }
        u
    };
    r.insert("prefix".into(), json!(prefix));
    r.insert("type".into(), json!(kind));
    r.insert("url".into(), json!(url));
    r
}

/// Serves the image of icon `n` when `caller` may read it; the same 404 when it does not exist
/// and when it is not allowed, so others' private icons cannot be probed.
async fn serve(req: &Req, n: &Name) -> Result<Out, ApiError> {
    let db = db_of(req)?;
    let refused = || ApiError::not_found("Not found or not allowed");
    let found = db
        .get("bk_icon", &n.key(), &Options::default())
        .await?
        .ok_or_else(refused)?;
    if !allowed(text(&found, "acl_allow"), &n.id, req.account.as_ref()) {
        return Err(refused());
    }
    let ext = match text(&found, "ext") {
        "" => "jpg",
        e => e,
    };
    Format::parse(ext).map_err(|_| ApiError::internal(format!("bk_icon has a bad ext {ext:?}")))?;
    let path = icon_path(&req.api.cfg.dir("images"), &n.prefix, &n.id, &n.kind, ext);
    send_file(path, content_type(ext)).await
}

/// `/icon/get`, `/account/get/icon`.
async fn get(req: Arc<Req>, fixed: Option<&'static str>) -> Result<Out, ApiError> {
    let n = Name::of(&req, fixed)?;
    serve(&req, &n).await
}

/// `/image/PREFIX/ID/TYPE` (a `.ext` after the type is ignored).
async fn image(req: Arc<Req>) -> Result<Out, ApiError> {
    let part = |name: &str| req.capture(name).unwrap_or("").to_string();
    let kind = part("type");
    let kind = match kind.rsplit_once('.') {
        Some((k, ext)) if Format::parse(ext).is_ok() => k.to_string(),
        _ => kind,
    };
    let n = Name::checked(part("prefix"), part("id"), kind)?;
    serve(&req, &n).await
}

/// `/icon/select`, `/account/select/icon`.
async fn select(req: Arc<Req>, fixed: Option<&'static str>) -> Result<Out, ApiError> {
    let db = db_of(&req)?;
    let prefix = match fixed {
        Some(p) => p.to_string(),
        None => req.required("prefix")?.to_string(),
    };
    check_prefix(&prefix)?;
    let id = match req.param("id").filter(|i| !i.is_empty()) {
        Some(i) => i.to_string(),
        None => req.account()?.id().to_string(),
    };
    check_owner(&id)?;
    let kind = req.param("type").unwrap_or("");
    if !kind.is_empty() {
        check_kind(if fixed.is_some() { "" } else { &prefix }, kind)?;
    }
    let (_, mut opts) = request(&req.params)?;
    opts.ops = Default::default();
    opts = opts.op("type", Op::BeginsWith);
    let q = row(&[("id", &id), ("type", &format!("{prefix}:{kind}"))]);
    let res = db.select("bk_icon", &q, &opts).await?;
    let rows: Vec<Row> = res
        .rows
        .into_iter()
        .filter(|r| allowed(text(r, "acl_allow"), &id, req.account.as_ref()))
        .map(|r| format(&req, r))
        .collect();
    Ok(Out::Json(list(rows, res.next_token)))
}

/// The `-api-icon-limit` when adding an icon of `kind`: its own entry, else `*`; it bounds how
/// many icons of the prefix the account keeps.
fn limit(req: &Req, kind: &str) -> Option<usize> {
    let map = req.api.cfg.map("api-icon-limit");
    let find = |k: &str| {
        map.iter()
            .find(|(t, _)| t == k)
            .and_then(|(_, n)| n.trim().parse::<usize>().ok())
    };
    find(kind).or_else(|| find("*"))
}

/// `/icon/put`, `/icon/upload`, `/account/put/icon`.
async fn put(req: Arc<Req>, fixed: Option<&'static str>) -> Result<Out, ApiError> {
    let db = db_of(&req)?;
    let me = req.account()?;
    let n = Name::of(&req, fixed)?;
    if n.id != me.id() && !me.is_admin() {
        return Err(ApiError::denied(
            "only admins may store icons of other accounts",
        ));
    }
    let acl = req.param("acl_allow").unwrap_or("").trim().to_string();
    if acl.len() > 4096 || acl.chars().any(char::is_control) {
        return Err(ApiError::bad(
            "acl_allow must be \"\", all, auth or a list of ids",
        ));
    }
    let data = upload_of(&req, "icon").await?.ok_or_else(|| {
        ApiError::bad("icon is required (base64 icon=, a JSON icon field or a multipart file)")
    })?;
    let c = convert_params(&req)?;
    let place = match (req.param("latitude"), req.param("longitude")) {
        (None, None) => None,
        (Some(lat), Some(lon)) => {
            let (lat, lon) = (lat.trim().parse::<f64>(), lon.trim().parse::<f64>());
            let (Ok(lat), Ok(lon)) = (lat, lon) else {
                return Err(ApiError::bad("latitude and longitude must be numbers"));
            };
            let hash = crate::geo::encode(lat, lon, crate::geo::MAX_LENGTH)
                .map_err(|e| ApiError::bad(e.to_string()))?;
            Some((lat, lon, hash))
        }
        _ => return Err(ApiError::bad("latitude and longitude go together")),
    };
    let descr = req.param("descr").unwrap_or("");
    if descr.len() > 4096 {
        return Err(ApiError::bad("descr is longer than 4096 bytes"));
    }
    // Everything the request says is checked before anything is written.
    let existing = db
        .select(
            "bk_icon",
            &row(&[("id", &n.id), ("type", &format!("{}:", n.prefix))]),
            &Options {
                count: 1000,
                ..Options::default()
            }
            .op("type", Op::BeginsWith),
        )
        .await?
        .rows;
    let key = n.key();
    let old = existing
        .iter()
        .find(|r| text(r, "type") == text(&key, "type"))
        .cloned();
    if let Some(max) = limit(&req, &n.kind) {
        if old.is_none() && existing.len() >= max {
            return Err(ApiError::bad(format!(
                "no more icons allowed (limit {max} for prefix {})",
                n.prefix
            )));
        }
    }
    let out = convert(&req, data, c).await?;
    let ext = out.format.ext();
    let images = req.api.cfg.dir("images");
    let path = icon_path(&images, &n.prefix, &n.id, &n.kind, ext);
    write_file(path.clone(), out.data).await?;
    let mut r = key.clone();
    r.insert("prefix".into(), json!(n.prefix));
    r.insert("acl_allow".into(), json!(acl));
    r.insert("ext".into(), json!(ext));
    if !descr.is_empty() {
        r.insert("descr".into(), json!(descr));
    }
    if let Some((lat, lon, hash)) = place {
        r.insert("latitude".into(), json!(lat));
        r.insert("longitude".into(), json!(lon));
        r.insert("geohash".into(), json!(hash));
    }
    if let Err(e) = db.put("bk_icon", &r, &Options::default()).await {
        if old.is_none() {
            remove_file(path).await;
        }
        return Err(e.into());
    }
    // A new format leaves the old file behind otherwise.
    if let Some(o) = &old {
        let old_ext = text(o, "ext");
        if !old_ext.is_empty() && old_ext != ext && Format::parse(old_ext).is_ok() {
            remove_file(icon_path(&images, &n.prefix, &n.id, &n.kind, old_ext)).await;
        }
    }
    if n.prefix == "account" {
        sync_account_icons(db, &n.id).await?;
    }
    let mut shown = format(&req, r);
    // The stored file, relative to the images directory (`PREFIX/XX/YY/TYPE-ID.EXT`).
    if let Ok(rel) = path.strip_prefix(&images) {
        shown.insert("name".into(), json!(rel.to_string_lossy()));
    }
    shown.insert("width".into(), json!(out.width));
    shown.insert("height".into(), json!(out.height));
    Ok(Out::Json(Value::Object(shown)))
}

/// Deletes a stored icon: its row and its file.
pub(crate) async fn delete_icon(db: &Db, images: &Path, stored: &Row) -> Result<(), DbError> {
    let id = text(stored, "id");
    let t = text(stored, "type");
    let (prefix, kind) = t.split_once(':').unwrap_or(("", t));
    let ext = match text(stored, "ext") {
        "" => "jpg",
        e => e,
    };
    db.del(
        "bk_icon",
        &row(&[("id", id), ("type", t)]),
        &Options::default(),
    )
    .await?;
    if check_prefix(prefix).is_ok() && check_owner(id).is_ok() && Format::parse(ext).is_ok() {
        remove_file(icon_path(images, prefix, id, kind, ext)).await;
    }
    Ok(())
}

/// `/icon/del`, `/account/del/icon`.
async fn del(req: Arc<Req>, fixed: Option<&'static str>) -> Result<Out, ApiError> {
    let db = db_of(&req)?;
    let me = req.account()?;
    let n = Name::of(&req, fixed)?;
    if n.id != me.id() && !me.is_admin() {
        return Err(ApiError::denied(
            "only admins may delete icons of other accounts",
        ));
    }
    let stored = db
        .get("bk_icon", &n.key(), &Options::default())
        .await?
        .ok_or_else(|| ApiError::not_found("no such icon"))?;
    delete_icon(db, &req.api.cfg.dir("images"), &stored).await?;
    if n.prefix == "account" {
        sync_account_icons(db, &n.id).await?;
    }
    Ok(Out::Json(json!({})))
}

/// Writes the types of account `id`'s icons, as stored now, to `bk_account.icons` (read back
/// after the write, so concurrent puts of different types converge on the last one's view).
async fn sync_account_icons(db: &Db, id: &str) -> Result<(), DbError> {
    let mut types: Vec<String> = rows_of_type(db, "bk_icon", id, "account:")
        .await?
        .iter()
        .filter_map(|r| text(r, "type").strip_prefix("account:").map(str::to_string))
        .collect();
    types.sort();
    let r = row(&[("id", id), ("icons", &types.join(","))]);
    match db.update("bk_account", &r, &Options::default()).await {
        // An account without its bk_account row (made by an admin tool) just has no list.
        Ok(_) | Err(DbError::NotFound) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes every icon of account `id`, files included (`/account/del`).
pub(crate) async fn delete_account(db: &Db, images: &Path, id: &str) -> Result<(), DbError> {
    for r in &rows_of_type(db, "bk_icon", id, "").await? {
        delete_icon(db, images, r).await?;
    }
    Ok(())
}

/// Account deletion: removes the account's icons and their files unless `bk_icon` is kept.
fn on_account_delete<'a>(d: &'a AccountDeletion<'a>) -> HookFuture<'a> {
    Box::pin(async move {
        if d.kept("bk_icon") {
            return Ok(());
        }
        delete_account(d.db, d.images, d.id).await
    })
}
