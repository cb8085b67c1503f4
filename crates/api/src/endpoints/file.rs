//! `/file/*` (docs/api.md): a file store under `files/OWNER/PREFIX/NAME` for signed-in callers
//! (restrict it further with `-api-allow-admin` or an access check). Files live under their
//! owner's account id: a caller reads, writes and deletes its own; `id=OWNER` names another
//! account's files, which only admins may touch (403 otherwise, before anything is looked at). The content comes as a
//! multipart file, a base64 `data` field of a JSON body, a base64 `data` parameter, or the raw
//! body of any other content type. Names are checked before anything is touched: a relative
//! path of normal components (no `..`, no `.`, no empty part), no absolute path, no NUL or other
//! control character, no backslash, at most 255 bytes a part and 1024 in all; and the directory
//! a file lands in must still be inside `files/` once symbolic links are resolved.

use super::common::files::{base64_decode, remove_file, send_file, upload, write_file};
use crate::api::{Req, Routes};
use crate::error::ApiError;
use crate::hooks::{AccountDeletion, HookFuture};
use crate::reply::Out;
use crate::route::RouteError;
use hyper::header::CONTENT_TYPE;
use serde_json::{json, Value};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// Registers the file group.
pub(crate) fn register(r: &mut Routes) -> Result<(), RouteError> {
    r.add("*", "/file/get", "the file prefix/name", get)?;
    r.add(
        "*",
        "/file/put",
        "store the file prefix/name from a multipart file, base64 data= or the raw body; name (or _name) defaults to the uploaded file's name; _ext=EXT adds that extension, _tm=1 a timestamp before it; answers the stored name",
        put,
    )?;
    r.add("*", "/file/del", "delete the file prefix/name", del)?;
    r.on_account_delete(on_account_delete);
    Ok(())
}

/// The longest name accepted, and the longest part of one.
const MAX_NAME: usize = 1024;
const MAX_PART: usize = 255;

/// A relative path of normal components, or 400 naming the parameter.
pub(crate) fn check_name(param: &str, name: &str, nested: bool) -> Result<PathBuf, ApiError> {
    let bad = |why: &str| Err(ApiError::bad(format!("{param} {why}")));
    if name.is_empty() {
        return bad("is required");
    }
    if name.len() > MAX_NAME {
        return bad(&format!("is longer than {MAX_NAME} bytes"));
    }
    if name.chars().any(|c| c.is_control()) {
        return bad("must not contain NUL or control characters");
    }
    if name.contains('\\') {
        return bad("must not contain a backslash");
    }
    if name.starts_with('/') {
        return bad("must be a relative path");
    }
    if !nested && name.contains('/') {
        return bad("must not contain /");
    }
    let mut out = PathBuf::new();
    for part in name.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return bad("must not contain empty, . or .. parts");
        }
        if part.len() > MAX_PART {
            return bad(&format!("has a part longer than {MAX_PART} bytes"));
        }
        out.push(part);
    }
    // What the checks above guarantee, stated once more in the path's own terms.
    if !out.components().all(|c| matches!(c, Component::Normal(_))) {
        return bad("must be a plain relative path");
    }
    Ok(out)
}

/// The account whose files a request addresses: `id` when given, which only that account itself
/// or an admin may name; the caller otherwise.
fn owner(req: &Req) -> Result<PathBuf, ApiError> {
    let me = req.account()?;
    match req.param("id").filter(|v| !v.is_empty()) {
        None => check_name("id", me.id(), false),
        Some(id) if id == me.id() || me.is_admin() => check_name("id", id, false),
        Some(id) => {
            tracing::info!(
                "/file: account {} refused the files of account {id:?}",
                me.id()
            );
            Err(ApiError::denied(
                "Access denied: only the owner or an admin may use these files",
            ))
        }
    }
}

/// `files/OWNER/PREFIX/NAME` of a request.
fn path_of(req: &Req) -> Result<PathBuf, ApiError> {
    Ok(place_of(req, req.param("name").unwrap_or(""))?.1)
}

/// `files/OWNER` and `files/OWNER/PREFIX/NAME` of a request, for the given name.
fn place_of(req: &Req, name: &str) -> Result<(PathBuf, PathBuf), ApiError> {
    let owner = req.api.cfg.dir("files").join(owner(req)?);
    let prefix = check_name("prefix", req.required("prefix")?, false)?;
    let name = check_name("name", name, true)?;
    let path = owner.join(prefix).join(name);
    Ok((owner, path))
}

/// The name a put stores under (the reference platform's rules): `name`, else `_name`, else
/// the uploaded file's own name; `_ext=EXT` adds `.EXT` unless the name ends so already;
/// `_tm=1` puts `-MILLISECONDS` before the extension, so repeated uploads do not overwrite.
fn put_name(req: &Req) -> Result<String, ApiError> {
    let given = ["name", "_name"]
        .iter()
        .find_map(|p| req.param(p).filter(|v| !v.is_empty()));
    let mut name = match given {
        Some(n) => n.to_string(),
        None => req
            .params
            .files()
            .iter()
            .find_map(|f| f.file_name.as_deref())
            // A browser may send a full client path: only its last part is the name.
            .map(|f| f.rsplit(['/', '\\']).next().unwrap_or(f).to_string())
            .filter(|f| !f.is_empty())
            .ok_or_else(|| {
                ApiError::bad("name is required (or _name, or a multipart file with a file name)")
            })?,
    };
    if let Some(ext) = req.param("_ext").filter(|v| !v.is_empty()) {
        if ext.len() > 16 || !ext.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ApiError::bad("_ext must be 1 to 16 letters or digits"));
        }
        let dotted = format!(".{ext}");
        if !name
            .to_ascii_lowercase()
            .ends_with(&dotted.to_ascii_lowercase())
        {
            name.push_str(&dotted);
        }
    }
    if matches!(req.param("_tm"), Some("1" | "true")) {
        let last = name.rfind('/').map_or(0, |i| i + 1);
        let at = match name[last..].rfind('.') {
            Some(i) if i > 0 => last + i,
            _ => name.len(),
        };
        name.insert_str(at, &format!("-{}", bkjs_base::time::now_ms()));
    }
    Ok(name)
}

/// Refuses a path whose existing directories lead outside `root` through a symbolic link.
async fn inside(root: PathBuf, path: PathBuf) -> Result<(), ApiError> {
    let ok = tokio::task::spawn_blocking(move || {
        let root = std::fs::canonicalize(&root).unwrap_or(root);
        let mut dir: &Path = path.parent().unwrap_or(&path);
        // The nearest directory that exists decides where the file really lands.
        loop {
            match std::fs::canonicalize(dir) {
                Ok(real) => return real.starts_with(&root),
                Err(_) => match dir.parent() {
                    Some(p) => dir = p,
                    None => return false,
                },
            }
        }
    })
    .await
    .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        tracing::warn!("/file: a path that leaves the files directory was refused");
        Err(ApiError::bad("the path leaves the files directory"))
    }
}

fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" => "text/plain; charset=utf-8",
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css",
        "js" => "application/javascript",
        "json" => "application/json",
        "csv" => "text/csv",
        "xml" => "application/xml",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "mp3" => "audio/mpeg",
        "mp4" => "video/mp4",
        _ => "application/octet-stream",
    }
}

/// `/file/get`.
async fn get(req: Arc<Req>) -> Result<Out, ApiError> {
    let path = path_of(&req)?;
    inside(req.api.cfg.dir("files"), path.clone()).await?;
    let ct = content_type(&path);
    send_file(path, ct).await
}

/// The content of a put, decoded off the request task when the body is large.
async fn content_of(req: &Arc<Req>) -> Result<Vec<u8>, ApiError> {
    let r = req.clone();
    req.api
        .off_task(req.body.len(), move || content(&r))
        .await?
}

/// The content of a put.
fn content(req: &Req) -> Result<Vec<u8>, ApiError> {
    if let Some(data) = upload(&req.params, "data")? {
        return Ok(data);
    }
    let ct = req
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let parsed = ct.starts_with("application/json")
        || ct.starts_with("application/x-www-form-urlencoded")
        || ct.starts_with("multipart/form-data");
    if !req.body.is_empty() && !parsed {
        return Ok(req.body.to_vec());
    }
    if let Some(Value::String(s)) = req.params.json("data") {
        return base64_decode("data", s);
    }
    Err(ApiError::bad(
        "data is required (a multipart file, base64 data= or a raw body)",
    ))
}

/// `/file/put`.
async fn put(req: Arc<Req>) -> Result<Out, ApiError> {
    let name = put_name(&req)?;
    let (owner, path) = place_of(&req, &name)?;
    let data = content_of(&req).await?;
    let root = req.api.cfg.dir("files");
    inside(root, path.clone()).await?;
    let size = data.len();
    crate::quota::check_storage(&req.api.cfg, req.account()?, &owner, &path, size as u64).await?;
    write_file(path, data).await?;
    Ok(Out::Json(json!({
        "prefix": req.param("prefix").unwrap_or(""),
        "name": name,
        "size": size,
    })))
}

/// `/file/del`.
async fn del(req: Arc<Req>) -> Result<Out, ApiError> {
    let path = path_of(&req)?;
    inside(req.api.cfg.dir("files"), path.clone()).await?;
    let exists = {
        let p = path.clone();
        tokio::task::spawn_blocking(move || p.is_file())
            .await
            .unwrap_or(false)
    };
    if !exists {
        return Err(ApiError::not_found("no such file"));
    }
    remove_file(path).await;
    Ok(Out::Json(json!({})))
}

/// A deleted account's files go with it: `files/ID`.
fn on_account_delete<'a>(d: &'a AccountDeletion<'a>) -> HookFuture<'a> {
    Box::pin(async move {
        let Ok(owner) = check_name("id", d.id, false) else {
            tracing::warn!("account deletion: id {:?} names no files directory", d.id);
            return Ok(());
        };
        let dir = d.files.join(owner);
        let shown = dir.display().to_string();
        match tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Ok(Err(e)) => tracing::warn!("account deletion: remove {shown}: {e}"),
            Err(e) => tracing::warn!("account deletion: remove {shown}: {e}"),
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_relative_paths() {
        assert_eq!(
            check_name("name", "a.txt", true).expect("ok"),
            PathBuf::from("a.txt")
        );
        assert_eq!(
            check_name("name", "d/e/f.bin", true).expect("ok"),
            PathBuf::from("d/e/f.bin")
        );
        for bad in [
            "",
            "..",
            "../x",
            "a/../b",
            "a/./b",
            "/etc/passwd",
            "a//b",
            "a/",
            "x\0y",
            "a\\..\\b",
            "new\nline",
        ] {
            let e = check_name("name", bad, true).expect_err(bad);
            assert_eq!(e.status, hyper::StatusCode::BAD_REQUEST);
            assert!(e.message.starts_with("name "), "{}", e.message);
        }
        assert!(check_name("name", &"x".repeat(256), true).is_err());
        assert!(check_name("name", &format!("{}/y", "x".repeat(255)), true).is_ok());
        assert!(
            check_name("name", &["abcdefgh"; 200].join("/"), true).is_err(),
            "total length"
        );
        assert!(
            check_name("prefix", "a/b", false).is_err(),
            "a prefix is one part"
        );
    }
}
