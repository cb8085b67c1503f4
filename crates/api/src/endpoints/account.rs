//! `/account/*` (docs/api.md): add, get (self, others' public columns, session cookie), select,
//! update, del and put/secret, over the `bk_auth`, `bk_account` and `bk_counter` rows.

use super::common::query::request;
use super::common::rows::{db_of, for_client, public_only, row};
use crate::access;
use crate::api::{Req, Routes};
use crate::auth::{self, SESSION_COOKIE};
use crate::error::ApiError;
use crate::hooks::{AccountDeleteHook, AccountDeletion};
use crate::reply::Out;
use bkjs_db::{Db, DbError, Options, Row, Table};
use hyper::header::SET_COOKIE;
use hyper::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;

/// Registers the account group.
pub(crate) fn register(r: &mut Routes) -> Result<(), crate::route::RouteError> {
    r.add(
        "*",
        "/account/add",
        "create an account: login, secret, name required; other bk_account columns optional",
        add,
    )?;
    r.add("*", "/account/get", "the caller's account (all columns); id=a,b: other accounts' public columns; _session=1|0 sets or clears the session cookie", get)?;
    r.add("*", "/account/select", "search accounts by bk_account columns (_ops, _count, _start); others' rows show public columns", select)?;
    r.add(
        "*",
        "/account/update",
        "change columns of the caller's account (admins: of account id)",
        update,
    )?;
    r.add(
        "*",
        "/account/del",
        "delete the caller's account (admins: account id) and every row it owns",
        del,
    )?;
    r.add(
        "*",
        "/account/logout",
        "end every session of the caller (cookies issued before stop working) and drop the session cookie",
        logout,
    )?;
    r.add(
        "*",
        "/account/put/secret",
        "replace the caller's secret: secret required",
        put_secret,
    )?;
    Ok(())
}

/// A key row of one text column.
fn key(name: &str, value: &str) -> Row {
    row(&[(name, value)])
}

/// The request's parameters as one row, typed where the body was JSON.
fn input(req: &Req) -> Row {
    req.params
        .pairs()
        .iter()
        .map(|(k, v)| {
            let value = req.params.json(k).cloned().unwrap_or_else(|| json!(v));
            (k.clone(), value)
        })
        .collect()
}

/// The `bk_account` columns of `input`; keys and columns the caller may not write are left out.
fn account_columns(input: &Row, db: &Db, admin: bool) -> Result<Row, DbError> {
    let table = db.table("bk_account")?;
    let mut row = Row::new();
    for (k, v) in input {
        let Some(col) = table.column(k) else { continue };
        if matches!(k.as_str(), "id" | "login" | "ctime" | "mtime" | "icons")
            || (col.admin && !admin)
            || col.readonly
        {
            continue;
        }
        row.insert(k.clone(), v.clone());
    }
    Ok(row)
}

/// A `device_id` must name devices push can reach (`apn://HEX`, `fcm://TOKEN`, `webpush://...`,
/// comma-separated; docs/api.md): a bad entry is a 400 naming it, nothing is stored.
fn check_devices(input: &Row) -> Result<(), ApiError> {
    if let Some(v) = input.get("device_id").and_then(Value::as_str) {
        for d in bkjs_push::Device::parse_list(v) {
            d.map_err(|e| ApiError::bad(format!("device_id: {e}")))?;
        }
    }
    Ok(())
}

fn text<'a>(input: &'a Row, name: &str) -> Result<&'a str, ApiError> {
    match input.get(name).and_then(Value::as_str) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(ApiError::bad(format!("{name} is required"))),
    }
}

/// `/account/add`.
async fn add(req: Arc<Req>) -> Result<Out, ApiError> {
    let db = db_of(&req)?;
    let admin = req.account.as_ref().is_some_and(|a| a.is_admin());
    let row = create_account(db, &input(&req), admin).await?;
    Ok(Out::Json(Value::Object(row)))
}

/// Creates an account from `input` (login, secret and name required): bk_auth, bk_account and
/// bk_counter rows under a new 32-hex-digit id. Only `admin` callers may set bk_auth's type,
/// ACLs, status and expiry. Nothing is left behind when a step fails. Answers the new bk_account
/// row as its owner sees it.
pub async fn create_account(db: &Db, input: &Row, admin: bool) -> Result<Row, ApiError> {
    check_devices(input)?;
    let login = text(input, "login")?;
    let secret = text(input, "secret")?;
    let name = text(input, "name")?;
    if auth::check_login(login).is_err() {
        return Err(ApiError::bad(
            "login must be at most 256 bytes, without | or control characters",
        ));
    }
    if secret.len() > 1024 {
        return Err(ApiError::bad("secret is too long"));
    }
    let id = hex::encode(rand::random::<[u8; 16]>());
    let alias = input
        .get("alias")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
        .unwrap_or(name);
    let mut auth = key("login", login);
    auth.insert("id".into(), json!(id));
    auth.insert("secret".into(), json!(secret));
    auth.insert("alias".into(), json!(alias));
    if admin {
        for c in ["type", "acl_deny", "acl_allow", "expires", "status"] {
            if let Some(v) = input.get(c) {
                auth.insert(c.into(), v.clone());
            }
        }
    }
    let mut account = account_columns(input, db, admin)?;
    account.insert("id".into(), json!(id));
    account.insert("login".into(), json!(login));
    account.insert("alias".into(), json!(alias));
    account.insert("ctime".into(), json!(bkjs_base::time::now_ms()));
    match db.add("bk_auth", &auth, &Options::default()).await {
        Ok(_) => {}
        Err(DbError::Exists) => {
            return Err(ApiError::new(StatusCode::CONFLICT, "login already exists"))
        }
        Err(e) => return Err(e.into()),
    }
    let rest = async {
        db.add("bk_account", &account, &Options::default()).await?;
        db.put("bk_counter", &key("id", &id), &Options::default())
            .await
    };
    if let Err(e) = rest.await {
        // Leave nothing half-made behind.
        let _ = db
            .del("bk_account", &key("id", &id), &Options::default())
            .await;
        let _ = db
            .del("bk_auth", &key("login", login), &Options::default())
            .await;
        return Err(e.into());
    }
    let table = db.table("bk_account")?;
    let mut reply = db
        .get("bk_account", &key("id", &id), &Options::default())
        .await?
        .unwrap_or(account);
    for_client(&table, &mut reply, admin);
    Ok(reply)
}

/// The caller's bk_account row with login and type from bk_auth.
async fn own(req: &Req, db: &Db) -> Result<Row, ApiError> {
    let me = req.account()?;
    let table = db.table("bk_account")?;
    let mut row = db
        .get_cached("bk_account", &key("id", me.id()), &Options::default())
        .await?
        .unwrap_or_else(|| key("id", me.id()));
    for_client(&table, &mut row, true);
    icon_urls(&mut row, None);
    row.insert("login".into(), json!(me.login()));
    if let Some(t) = me.auth.get("type").filter(|t| !t.is_null()) {
        row.insert("type".into(), t.clone());
    }
    Ok(row)
}

/// Turns the `icons` column ("0,1") into `icon0`, `icon1`, ...: the URL of each account icon,
/// served by `/account/get/icon` under the icon's own `acl_allow` (`id=` for another account's).
fn icon_urls(row: &mut Row, other: Option<&str>) {
    let Some(Value::String(types)) = row.remove("icons") else {
        return;
    };
    let id = other.map(|id| {
        let enc: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
        format!("&id={enc}")
    });
    for t in types.split(',').filter(|t| !t.is_empty()) {
        let enc: String = form_urlencoded::byte_serialize(t.as_bytes()).collect();
        let url = format!(
            "/account/get/icon?type={enc}{}",
            id.as_deref().unwrap_or("")
        );
        row.insert(format!("icon{t}"), json!(url));
    }
}

/// `/account/get`.
async fn get(req: Arc<Req>) -> Result<Out, ApiError> {
    let db = db_of(&req)?;
    if let Some(ids) = req.param("id").filter(|s| !s.is_empty()) {
        let me = req.account.as_ref().map(|a| a.id().to_string());
        let admin = req.account.as_ref().is_some_and(|a| a.is_admin());
        let table = db.table("bk_account")?;
        let mut rows = Vec::new();
        for id in ids.split(',').filter(|x| !x.is_empty()).take(100) {
            let Some(mut row) = db
                .get_cached("bk_account", &key("id", id), &Options::default())
                .await?
            else {
                continue;
            };
            let mine = me.as_deref() == Some(id);
            if admin || mine {
                for_client(&table, &mut row, admin);
            } else {
                public_only(&table, &mut row);
            }
            icon_urls(&mut row, (!mine).then_some(id));
            rows.push(Value::Object(row));
        }
        return Ok(Out::Json(json!({"count": rows.len(), "data": rows})));
    }
    let row = own(&req, db).await?;
    match req.param("_session") {
        Some("1") | Some("true") => set_session(&req)?,
        Some("0") | Some("false") => clear_session(&req),
        _ => {}
    }
    Ok(Out::Json(Value::Object(row)))
}

/// Sets the `bk_sid` cookie: a v2 signature over the session string, keyed by the server's
/// session key and the account's secret (docs/auth.md).
fn set_session(req: &Req) -> Result<(), ApiError> {
    let me = req.account()?;
    let key = req
        .api
        .session_key
        .as_deref()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "sessions are off"))?;
    let age = req.api.cfg.duration("api-session-age");
    let expires = bkjs_base::time::now_ms() + age.as_millis() as i64;
    let host = access::host_of(&req.headers);
    let value = auth::session_cookie(key, me.login(), &me.session_secret(), host, expires)
        .map_err(|e| ApiError::internal(format!("session cookie: {}", e.message())))?;
    req.add_reply_header(
        SET_COOKIE,
        format!(
            "{SESSION_COOKIE}={value}; Path=/; Max-Age={}{}",
            age.as_secs(),
            cookie_flags(req)
        ),
    );
    Ok(())
}

/// The flags of the session cookie: never readable by scripts, never sent by another site's
/// page, and only over TLS when the request came over TLS (`X-Forwarded-Proto: https` from a
/// TLS-terminating proxy).
fn cookie_flags(req: &Req) -> &'static str {
    let tls = req
        .headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    if tls {
        "; HttpOnly; SameSite=Strict; Secure"
    } else {
        "; HttpOnly; SameSite=Strict"
    }
}

/// Tells the browser to drop the session cookie.
fn clear_session(req: &Req) {
    req.add_reply_header(
        SET_COOKIE,
        format!("{SESSION_COOKIE}=; Path=/; Max-Age=0{}", cookie_flags(req)),
    );
}

/// `/account/logout`: ends every session of the caller (the session generation moves on, so
/// cookies issued before are refused everywhere) and drops the cookie.
async fn logout(req: Arc<Req>) -> Result<Out, ApiError> {
    let db = db_of(&req)?;
    let me = req.account()?;
    let mut a = key("login", me.login());
    a.insert("session_gen".into(), json!(me.session_gen() + 1));
    db.update("bk_auth", &a, &Options::default()).await?;
    clear_session(&req);
    Ok(Out::Json(json!({})))
}

/// `/account/select`.
async fn select(req: Arc<Req>) -> Result<Out, ApiError> {
    let db = db_of(&req)?;
    let me = req.account()?;
    let admin = me.is_admin();
    let (query, opts) = request(&req.params)?;
    let table = db.table("bk_account")?;
    if !admin {
        only_public(&table, &query, &opts)?;
    }
    let query: Row = query
        .into_iter()
        .filter(|(k, _)| table.column(k).is_some_and(|c| admin || !c.admin))
        .collect();
    let res = db.select("bk_account", &query, &opts).await?;
    let data: Vec<Value> = res
        .rows
        .into_iter()
        .map(|mut row| {
            let mine = row.get("id").and_then(Value::as_str) == Some(me.id());
            if admin || mine {
                for_client(&table, &mut row, admin);
            } else {
                public_only(&table, &mut row);
            }
            Value::Object(row)
        })
        .collect();
    let mut v = json!({"count": data.len(), "data": data});
    if let Some(t) = res.next_token {
        v["next_token"] = json!(t);
    }
    Ok(Out::Json(v))
}

/// Refuses a non-admin search that filters, sorts or selects by a column that is not public:
/// its answers would reveal other accounts' private values one comparison at a time.
fn only_public(table: &Table, query: &Row, opts: &Options) -> Result<(), ApiError> {
    let private = |name: &str| table.column(name).is_some_and(|c| !c.public);
    let named = query
        .keys()
        .chain(opts.ops.keys())
        .chain(opts.select.iter())
        .map(String::as_str)
        .chain(opts.sort.as_deref());
    for name in named {
        if private(name) {
            return Err(ApiError::bad(format!(
                "{name}: only public columns of accounts can be searched, sorted or selected"
            )));
        }
    }
    Ok(())
}

/// The account a write applies to: the caller's, or for admins the one named by `id`.
fn target(req: &Req) -> Result<(String, bool), ApiError> {
    let me = req.account()?;
    match req.param("id").filter(|i| !i.is_empty() && *i != me.id()) {
        Some(other) if me.is_admin() => Ok((other.to_string(), true)),
        Some(_) => Err(ApiError::denied("only admins may change other accounts")),
        None => Ok((me.id().to_string(), me.is_admin())),
    }
}

/// The bk_auth row of account `id` (the caller's own is already known).
async fn auth_of(req: &Req, db: &Db, id: &str) -> Result<Row, ApiError> {
    let me = req.account()?;
    if me.id() == id {
        return Ok((*me.auth).clone());
    }
    let res = db
        .select("bk_auth", &key("id", id), &Options::default())
        .await?;
    res.rows
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found("no such account"))
}

/// `/account/update`.
async fn update(req: Arc<Req>) -> Result<Out, ApiError> {
    let db = db_of(&req)?;
    let (id, admin) = target(&req)?;
    let auth = auth_of(&req, db, &id).await?;
    update_account(db, &auth, &input(&req), admin).await?;
    Ok(Out::Json(json!({})))
}

/// Changes the bk_account columns `input` gives of the account whose bk_auth row is `auth`
/// (alias also in bk_auth; with `admin`, bk_auth's type, ACLs, status, expiry and secret too).
pub async fn update_account(db: &Db, auth: &Row, input: &Row, admin: bool) -> Result<(), ApiError> {
    let id = auth.get("id").and_then(Value::as_str).unwrap_or("");
    let login = auth.get("login").cloned().unwrap_or(Value::Null);
    check_devices(input)?;
    let mut row = account_columns(input, db, admin)?;
    let mut a = Row::new();
    if admin {
        for c in [
            "type",
            "acl_deny",
            "acl_allow",
            "expires",
            "status",
            "secret",
        ] {
            if let Some(v) = input.get(c) {
                a.insert(c.into(), v.clone());
            }
        }
    }
    if let Some(alias) = row.get("alias") {
        a.insert("alias".into(), alias.clone());
    }
    if row.is_empty() && a.is_empty() {
        return Err(ApiError::bad("nothing to update"));
    }
    if !row.is_empty() {
        row.insert("id".into(), json!(id));
        db.update("bk_account", &row, &Options::default()).await?;
    }
    if !a.is_empty() {
        a.insert("login".into(), login);
        db.update("bk_auth", &a, &Options::default()).await?;
    }
    Ok(())
}

/// `/account/put/secret`.
async fn put_secret(req: Arc<Req>) -> Result<Out, ApiError> {
    let db = db_of(&req)?;
    let secret = req.required("secret")?;
    if secret.len() > 1024 {
        return Err(ApiError::bad("secret is too long"));
    }
    let (id, _) = target(&req)?;
    let auth = auth_of(&req, db, &id).await?;
    let mut a = Row::new();
    a.insert(
        "login".into(),
        auth.get("login").cloned().unwrap_or(Value::Null),
    );
    a.insert("secret".into(), json!(secret));
    db.update("bk_auth", &a, &Options::default()).await?;
    Ok(Out::Json(json!({})))
}

/// `/account/del`: bk_auth, bk_account, and every row keyed by the account id in any table
/// whose first primary key column is `id`.
async fn del(req: Arc<Req>) -> Result<Out, ApiError> {
    let db = db_of(&req)?;
    let (id, _) = target(&req)?;
    let auth = auth_of(&req, db, &id).await?;
    let images = req.api.cfg.dir("images");
    let files = req.api.cfg.dir("files");
    delete_account(
        db,
        &images,
        &files,
        &id,
        auth.get("login").and_then(Value::as_str),
        &[],
        req.api.routes().account_delete_hooks(),
    )
    .await?;
    Ok(Out::Json(json!({})))
}

/// Removes an account and all its rows; the login first, so its credentials stop working even
/// if a later step fails. Rows that need more than a delete by id go first, by the `hooks` the
/// endpoint groups registered ([`Routes::account_delete_hooks`]: connections with the other
/// side's reverse rows and counters, locations keyed by geohash, icons and message images with
/// their files under `images`, `/file` files under `files`). Tables named in `keep` are left alone.
pub async fn delete_account(
    db: &Db,
    images: &std::path::Path,
    files: &std::path::Path,
    id: &str,
    login: Option<&str>,
    keep: &[String],
    hooks: &[AccountDeleteHook],
) -> Result<(), DbError> {
    if let Some(login) = login {
        db.del("bk_auth", &key("login", login), &Options::default())
            .await?;
    }
    let deletion = AccountDeletion {
        db,
        images,
        files,
        id,
        keep,
    };
    for hook in hooks {
        hook(&deletion).await?;
    }
    for t in db.tables() {
        if t.name() == "bk_auth" || keep.iter().any(|k| k == t.name()) {
            continue;
        }
        let pk = t.primary_keys();
        if pk.first().map(|c| c.name.as_str()) != Some("id") {
            continue;
        }
        if pk.len() == 1 {
            db.del(t.name(), &key("id", id), &Options::default())
                .await?;
        } else {
            let opts = Options {
                noscan: false,
                ..Default::default()
            };
            db.del_all(t.name(), &key("id", id), &opts).await?;
        }
    }
    Ok(())
}
