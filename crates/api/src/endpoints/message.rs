//! `/message/*` (docs/api.md): private messages. A message from S to R is the row `bk_message
//! (R, "MS:S")` in R's inbox and `bk_sent (S, "MS:R")` in S's sent box (MS = milliseconds since
//! the epoch); R may move it to `bk_archive`. A message carries text (`msg`), an image (`icon`,
//! stored as `images/message/XX/YY/MS:S-R.EXT` and read with `/message/image`), or both.
//! Replies show `mtime` as the number MS, with the peer in `sender` or `recipient`.
//!
//! Adding a message increments the `msg0` counter of the sender and `msg1` of the recipient
//! when those `bk_counter` columns are `autoincr`.

use super::common::files::{
    convert, convert_params, icon_path, remove_file, send_file, upload_of, write_file,
};
use super::common::ids::{auto_counter, check_id};
use super::common::publish::{publish_to_account, wants_publish};
use super::common::query::request;
use super::common::rows::{db_of, details, flag, list, row, text};
use crate::api::{Req, Routes};
use crate::error::ApiError;
use crate::hooks::{AccountDeletion, HookFuture};
use crate::image::Format;
use crate::reply::Out;
use crate::route::RouteError;
use bkjs_db::{Db, DbError, Op, Options, Row};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;

/// Registers the message group.
pub(crate) fn register(r: &mut Routes) -> Result<(), RouteError> {
    r.add(
        "*",
        "/message/add",
        "send msg and/or icon (base64 icon=, a JSON icon field or a multipart file) to account id (_nosent, _nocounter, _publish)",
        add,
    )?;
    r.add(
        "*",
        "/message/get",
        "the inbox, optionally from sender or after mtime, paged; _archive moves what is read to the archive, _trash deletes it, _details adds the senders' public columns",
        |req| async move { get(req, Folder::inbox()).await },
    )?;
    r.add(
        "*",
        "/message/get/archive",
        "the archive, as /message/get",
        |req| async move { get(req, Folder::archive()).await },
    )?;
    r.add(
        "*",
        "/message/get/sent",
        "the sent messages, optionally to recipient or after mtime",
        |req| async move { get(req, Folder::sent()).await },
    )?;
    r.add(
        "*",
        "/message/archive",
        "move the inbox message sender+mtime to the archive",
        archive,
    )?;
    r.add(
        "*",
        "/message/del",
        "delete the inbox message sender+mtime, or all from sender, or all",
        |req| async move { del(req, Folder::inbox()).await },
    )?;
    r.add(
        "*",
        "/message/del/archive",
        "delete from the archive, as /message/del",
        |req| async move { del(req, Folder::archive()).await },
    )?;
    r.add(
        "*",
        "/message/del/sent",
        "delete sent messages: recipient+mtime, all to recipient, or all",
        |req| async move { del(req, Folder::sent()).await },
    )?;
    r.add(
        "*",
        "/message/image",
        "the image of the inbox or archive message sender+mtime",
        image,
    )?;
    r.on_account_delete(on_account_delete);
    Ok(())
}

/// One of the three message tables and the column naming the peer.
#[derive(Clone, Copy)]
struct Folder {
    table: &'static str,
    peer: &'static str,
    /// Whether its rows own the message images (the sent box shares the recipient's).
    owns_images: bool,
}

impl Folder {
    fn inbox() -> Folder {
        Folder {
            table: "bk_message",
            peer: "sender",
            owns_images: true,
        }
    }
    fn archive() -> Folder {
        Folder {
            table: "bk_archive",
            peer: "sender",
            owns_images: true,
        }
    }
    fn sent() -> Folder {
        Folder {
            table: "bk_sent",
            peer: "recipient",
            owns_images: false,
        }
    }
}

/// `MS:PEER`, the second key column.
fn key(ms: i64, peer: &str) -> String {
    format!("{ms}:{peer}")
}

/// A stored row as clients see it: `mtime` as a number.
fn shown(mut r: Row) -> Row {
    let ms = text(&r, "mtime")
        .split_once(':')
        .and_then(|(ms, _)| ms.parse::<i64>().ok());
    if let Some(ms) = ms {
        r.insert("mtime".into(), json!(ms));
    }
    r
}

/// The image file of a message in `owner`'s inbox or archive.
fn image_path(
    images: &Path,
    owner: &str,
    stored_mtime: &str,
    ext: &str,
) -> Option<std::path::PathBuf> {
    Format::parse(ext).ok()?;
    Some(icon_path(images, "message", owner, stored_mtime, ext))
}

fn mtime_param(req: &Req) -> Result<Option<i64>, ApiError> {
    match req.param("mtime").filter(|m| !m.is_empty()) {
        None => Ok(None),
        Some(m) => m
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| ApiError::bad("mtime must be the message's time in milliseconds")),
    }
}

/// `/message/add`.
async fn add(req: Arc<Req>) -> Result<Out, ApiError> {
    let db = db_of(&req)?;
    let me = req.account()?;
    let to = req.required("id")?;
    check_id("id", to)?;
    let msg = req.param("msg").filter(|m| !m.is_empty());
    let icon = upload_of(&req, "icon").await?;
    if msg.is_none() && icon.is_none() {
        return Err(ApiError::bad("msg or icon is required"));
    }
    let Some(recipient) = db
        .get_cached("bk_account", &row(&[("id", to)]), &Options::default())
        .await?
    else {
        return Err(ApiError::not_found("no such account"));
    };
    // The image is checked and converted before anything is stored.
    let image = match icon {
        Some(data) => Some(convert(&req, data, convert_params(&req)?).await?),
        None => None,
    };
    let ext = image.as_ref().map(|i| i.format.ext()).unwrap_or("");
    let mut ms = bkjs_base::time::now_ms();
    let mut inbox = row(&[("id", to), ("sender", me.id()), ("alias", me.alias())]);
    if let Some(m) = msg {
        inbox.insert("msg".into(), json!(m));
    }
    if !ext.is_empty() {
        inbox.insert("icon".into(), json!(ext));
    }
    // Two messages from one sender in the same millisecond take the next free one.
    let mut tries = 0;
    loop {
        inbox.insert("mtime".into(), json!(key(ms, me.id())));
        match db.add("bk_message", &inbox, &Options::default()).await {
            Ok(_) => break,
            Err(DbError::Exists) if tries < 10 => {
                tries += 1;
                ms += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let images = req.api.cfg.dir("images");
    let stored = key(ms, me.id());
    let inbox_key = row(&[("id", to), ("mtime", &stored)]);
    if let Some(img) = image {
        if let Some(path) = image_path(&images, to, &stored, ext) {
            if let Err(e) = write_file(path, img.data).await {
                let _ = db.del("bk_message", &inbox_key, &Options::default()).await;
                return Err(e);
            }
        }
    }
    let mut sent = inbox.clone();
    sent.remove("sender");
    sent.insert("id".into(), json!(me.id()));
    sent.insert("mtime".into(), json!(key(ms, to)));
    sent.insert("recipient".into(), json!(to));
    sent.insert("alias".into(), json!(text(&recipient, "alias")));
    if !flag(&req, "_nosent") {
        if let Err(e) = db.add("bk_sent", &sent, &Options::default()).await {
            let _ = db.del("bk_message", &inbox_key, &Options::default()).await;
            if let Some(path) = image_path(&images, to, &stored, ext) {
                remove_file(path).await;
            }
            return Err(e.into());
        }
    }
    if !flag(&req, "_nocounter") {
        auto_counter(db, me.id(), "msg0", 1).await;
        auto_counter(db, to, "msg1", 1).await;
    }
    if to != me.id() && wants_publish(&req) {
        let msg: String = inbox
            .get("msg")
            .and_then(Value::as_str)
            .unwrap_or("")
            .chars()
            .take(100)
            .collect();
        publish_to_account(&req, to, json!({"msg": msg})).await;
    }
    if to != me.id() && flag(&req, "_notify") {
        let body: String = inbox
            .get("msg")
            .and_then(Value::as_str)
            .unwrap_or("")
            .chars()
            .take(200)
            .collect();
        let mut data = serde_json::Map::new();
        data.insert("type".into(), json!("message"));
        data.insert("id".into(), json!(me.id()));
        data.insert("mtime".into(), json!(stored));
        let n = bkjs_push::Notification {
            title: me.alias().to_string(),
            body,
            data,
            urgent: true,
            ..Default::default()
        };
        crate::push::notify(&req.api.cfg, to, &format!("msg:{to}:{stored}"), n).await;
    }
    let reply = if flag(&req, "_nosent") { inbox } else { sent };
    Ok(Out::Json(Value::Object(shown(reply))))
}

/// The query of a listing: the caller's rows, optionally of one peer, around `mtime`, filtered
/// by the other message columns with their `_ops`.
///
/// `mtime` pages by time: after it by default, or as `_ops=mtime,OP` says: `gt`/`ge` (after),
/// `lt`/`le` (before; with `_desc=1` newest first), `between` (`mtime=FROM,TO`, inclusive).
/// Keys are `"MS:PEER"`, so a time bound becomes a key bound: `":"` sorts right after the
/// digits of MS and `";"` right after `":"`.
fn listing(req: &Req, b: Folder, me: &str) -> Result<(Row, Options), ApiError> {
    let (given, mut opts) = request(&req.params)?;
    let mut ops = std::mem::take(&mut opts.ops);
    let mut q = row(&[("id", me)]);
    // The peer: one id, or a list with `_ops=PEER,in`.
    let peer_op = ops.remove(b.peer);
    match given.get(b.peer) {
        Some(Value::Array(ids)) => {
            for id in ids {
                check_id(b.peer, id.as_str().unwrap_or(""))?;
            }
        }
        Some(Value::String(id)) if !id.is_empty() => check_id(b.peer, id)?,
        _ => {}
    }
    if let Some(v) = given
        .get(b.peer)
        .filter(|v| !matches!(v, Value::String(s) if s.is_empty()))
    {
        q.insert(b.peer.into(), v.clone());
        if let Some(op) = peer_op {
            opts = opts.op(b.peer, op);
        }
    }
    let time_op = ops.remove("mtime").unwrap_or(Op::Gt);
    if time_op == Op::Between {
        let range = req.param("mtime").unwrap_or("");
        let bounds: Vec<i64> = range
            .split(',')
            .map(|m| m.trim().parse::<i64>())
            .collect::<Result<_, _>>()
            .map_err(|_| ApiError::bad("mtime must be FROM,TO in milliseconds for between"))?;
        let [from, to] = bounds[..] else {
            return Err(ApiError::bad(
                "mtime must be FROM,TO in milliseconds for between",
            ));
        };
        q.insert(
            "mtime".into(),
            json!([format!("{from}:"), format!("{to};")]),
        );
        opts = opts.op("mtime", Op::Between);
    } else if let Some(ms) = mtime_param(req)? {
        let (bound, op) = match time_op {
            Op::Gt => (format!("{ms};"), Op::Gt),
            Op::Ge => (format!("{ms}:"), Op::Ge),
            Op::Lt => (format!("{ms}:"), Op::Lt),
            Op::Le => (format!("{ms};"), Op::Lt),
            other => {
                return Err(ApiError::bad(format!(
                    "_ops: mtime takes gt, ge, lt, le or between, not {other:?}"
                )))
            }
        };
        q.insert("mtime".into(), json!(bound));
        opts = opts.op("mtime", op);
    }
    // Any other message column is a condition, `=` unless `_ops` says otherwise; `null` and
    // `not null` need no value.
    for col in FILTERS {
        let op = ops.remove(*col);
        let value = match (given.get(*col), op) {
            (Some(v), _) => v.clone(),
            (None, Some(Op::Null | Op::NotNull)) => Value::Null,
            (None, _) => continue,
        };
        q.insert(col.to_string(), value);
        if let Some(op) = op {
            opts = opts.op(col, op);
        }
    }
    if let Some(col) = ops.keys().next() {
        return Err(ApiError::bad(format!(
            "_ops names {col}, which is not a condition of this listing ({}, mtime, {})",
            b.peer,
            FILTERS.join(", ")
        )));
    }
    Ok((q, opts))
}

/// Message columns a listing may filter on besides the peer and the time.
const FILTERS: &[&str] = &["alias", "msg", "icon", "acl_allow"];

/// `/message/get`, `/message/get/archive`, `/message/get/sent`.
async fn get(req: Arc<Req>, b: Folder) -> Result<Out, ApiError> {
    let db = db_of(&req)?;
    let me = req.account()?;
    let (q, opts) = listing(&req, b, me.id())?;
    let res = db.select(b.table, &q, &opts).await?;
    if b.table == "bk_message" {
        if flag(&req, "_archive") {
            for r in &res.rows {
                db.put("bk_archive", r, &Options::default()).await?;
                db.del("bk_message", r, &Options::default()).await?;
            }
        } else if flag(&req, "_trash") {
            let images = req.api.cfg.dir("images");
            for r in &res.rows {
                delete_row(db, &images, b, me.id(), r).await?;
            }
        }
    }
    let mut rows: Vec<Row> = res.rows.into_iter().map(shown).collect();
    if flag(&req, "_details") {
        details(db, &mut rows, b.peer).await?;
    }
    Ok(Out::Json(list(rows, res.next_token)))
}

/// `/message/archive`.
async fn archive(req: Arc<Req>) -> Result<Out, ApiError> {
    let db = db_of(&req)?;
    let me = req.account()?;
    let sender = req.required("sender")?;
    check_id("sender", sender)?;
    let ms = mtime_param(&req)?.ok_or_else(|| ApiError::bad("mtime is required"))?;
    let k = row(&[("id", me.id()), ("mtime", &key(ms, sender))]);
    let found = db
        .get("bk_message", &k, &Options::default())
        .await?
        .ok_or_else(|| ApiError::not_found("no such message"))?;
    db.put("bk_archive", &found, &Options::default()).await?;
    db.del("bk_message", &k, &Options::default()).await?;
    Ok(Out::Json(Value::Object(shown(found))))
}

/// Deletes one stored row of box `b` and, for the inbox and archive, its image unless the
/// same message is still in the other of the two.
async fn delete_row(db: &Db, images: &Path, b: Folder, me: &str, r: &Row) -> Result<(), DbError> {
    let stored = text(r, "mtime").to_string();
    let k = row(&[("id", me), ("mtime", &stored)]);
    db.del(b.table, &k, &Options::default()).await?;
    let ext = text(r, "icon");
    if b.owns_images && !ext.is_empty() {
        let other = if b.table == "bk_message" {
            "bk_archive"
        } else {
            "bk_message"
        };
        if db.get(other, &k, &Options::default()).await?.is_none() {
            if let Some(path) = image_path(images, me, &stored, ext) {
                remove_file(path).await;
            }
        }
    }
    Ok(())
}

/// `/message/del`, `/message/del/archive`, `/message/del/sent`.
async fn del(req: Arc<Req>, b: Folder) -> Result<Out, ApiError> {
    let db = db_of(&req)?;
    let me = req.account()?;
    let images = req.api.cfg.dir("images");
    let peer = req.param(b.peer).filter(|p| !p.is_empty());
    if let (Some(peer), Some(ms)) = (peer, mtime_param(&req)?) {
        check_id(b.peer, peer)?;
        let k = row(&[("id", me.id()), ("mtime", &key(ms, peer))]);
        let n = match db.get(b.table, &k, &Options::default()).await? {
            Some(r) => {
                delete_row(db, &images, b, me.id(), &r).await?;
                1
            }
            None => 0,
        };
        return Ok(Out::Json(json!({ "count": n })));
    }
    let (q, mut opts) = listing(&req, b, me.id())?;
    opts.count = 500;
    let mut rows = Vec::new();
    db.scan(b.table, &q, &opts, |page| {
        rows.extend(page);
        Ok(())
    })
    .await?;
    for r in &rows {
        delete_row(db, &images, b, me.id(), r).await?;
    }
    Ok(Out::Json(json!({ "count": rows.len() })))
}

/// `/message/image`.
async fn image(req: Arc<Req>) -> Result<Out, ApiError> {
    let db = db_of(&req)?;
    let me = req.account()?;
    let sender = req.required("sender")?;
    check_id("sender", sender)?;
    let ms = mtime_param(&req)?.ok_or_else(|| ApiError::bad("mtime is required"))?;
    let stored = key(ms, sender);
    let k = row(&[("id", me.id()), ("mtime", &stored)]);
    let found = match db.get("bk_message", &k, &Options::default()).await? {
        Some(r) => Some(r),
        None => db.get("bk_archive", &k, &Options::default()).await?,
    };
    let ext = found
        .as_ref()
        .map(|r| text(r, "icon").to_string())
        .filter(|e| !e.is_empty())
        .ok_or_else(|| ApiError::not_found("no such message image"))?;
    let path = image_path(&req.api.cfg.dir("images"), me.id(), &stored, &ext)
        .ok_or_else(|| ApiError::internal(format!("message {stored} has a bad icon {ext:?}")))?;
    let ct = Format::parse(&ext)
        .map(Format::content_type)
        .unwrap_or("application/octet-stream");
    send_file(path, ct).await
}

/// Removes the images of account `id`'s inbox and archive (`/account/del`; the rows go with the
/// account's other rows).
pub(crate) async fn delete_account(db: &Db, images: &Path, id: &str) -> Result<(), DbError> {
    for b in [Folder::inbox(), Folder::archive()] {
        let opts = Options {
            count: 500,
            noscan: false,
            ..Options::default()
        };
        let mut rows = Vec::new();
        db.scan(b.table, &row(&[("id", id)]), &opts, |page| {
            rows.extend(page);
            Ok(())
        })
        .await?;
        for r in &rows {
            let ext = text(r, "icon");
            if !ext.is_empty() {
                if let Some(path) = image_path(images, id, text(r, "mtime"), ext) {
                    remove_file(path).await;
                }
            }
        }
    }
    Ok(())
}

/// Account deletion: removes the images of the account's messages unless `bk_message` or
/// `bk_archive` is kept.
fn on_account_delete<'a>(d: &'a AccountDeletion<'a>) -> HookFuture<'a> {
    Box::pin(async move {
        if d.kept("bk_message") || d.kept("bk_archive") {
            return Ok(());
        }
        delete_account(d.db, d.images, d.id).await
    })
}
