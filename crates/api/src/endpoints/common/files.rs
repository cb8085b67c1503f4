//! Image and file storage shared by icons, message images and `/file/*`: where an image is stored,
//! reading an upload (multipart or base64), converting it on the blocking pool, and writing,
//! removing and sending files.

use crate::api::Req;
use crate::error::ApiError;
use crate::image::{Convert, Converted, Format, ImageError};
use crate::params::Params;
use crate::reply::Out;
use crate::reply::Reply;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_SECURITY_POLICY, CONTENT_TYPE,
    X_CONTENT_TYPE_OPTIONS,
};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// `images/PREFIX/XX/YY/TYPE-ID.EXT`: XX, YY are the last four digits of the id (zero-padded).
pub(crate) fn icon_path(images: &Path, prefix: &str, id: &str, kind: &str, ext: &str) -> PathBuf {
    let digits: String = id.chars().filter(char::is_ascii_digit).collect();
    let digits = format!("{digits:0>4}");
    let n = digits.len();
    let name = if kind.is_empty() {
        format!("{id}.{ext}")
    } else {
        format!("{kind}-{id}.{ext}")
    };
    images
        .join(prefix)
        .join(&digits[n - 2..])
        .join(&digits[n - 4..n - 2])
        .join(name)
}

/// The image bytes of a request: a multipart file (field `field`, or the only file), a base64
/// `field` of a JSON body, or a base64 `field` parameter. `None` when there is none.
pub(crate) fn upload(params: &Params, field: &str) -> Result<Option<Vec<u8>>, ApiError> {
    let files = params.files();
    if let Some(f) = files
        .iter()
        .find(|f| f.name == field)
        .or_else(|| (files.len() == 1).then(|| &files[0]))
    {
        return Ok(Some(f.data.to_vec()));
    }
    let text = match params.json(field) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ApiError::bad(format!("{field} must be base64 text"))),
        None => params.get(field).map(str::to_string),
    };
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    Ok(Some(base64_decode(field, &text)?))
}

/// [`upload`] of a request, decoded off the request task when its body is large.
pub(crate) async fn upload_of(
    req: &std::sync::Arc<Req>,
    field: &'static str,
) -> Result<Option<Vec<u8>>, ApiError> {
    let r = req.clone();
    req.api
        .off_task(req.body.len(), move || upload(&r.params, field))
        .await?
}

/// Standard or URL-safe base64, padded or not; a `+` turned into a space by form decoding counts
/// as `+`, line breaks are ignored.
pub(crate) fn base64_decode(field: &str, text: &str) -> Result<Vec<u8>, ApiError> {
    use base64::engine::{
        general_purpose, DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig,
    };
    let cleaned: String = text
        .chars()
        .filter(|c| !matches!(c, '\n' | '\r'))
        .map(|c| if c == ' ' { '+' } else { c })
        .collect();
    let lenient =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let std = GeneralPurpose::new(&base64::alphabet::STANDARD, lenient);
    let url = GeneralPurpose::new(&base64::alphabet::URL_SAFE, lenient);
    std.decode(&cleaned)
        .or_else(|_| url.decode(&cleaned))
        .or_else(|_| general_purpose::STANDARD.decode(&cleaned))
        .map_err(|_| ApiError::bad(format!("{field} is not valid base64")))
}

/// `_width`, `_height`, `_ext` and `_quality` of a request.
pub(crate) fn convert_params(req: &Req) -> Result<Convert, ApiError> {
    let int = |name: &str, min: i64, max: i64| -> Result<Option<i64>, ApiError> {
        match req.param(name).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => match v.trim().parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(ApiError::bad(format!(
                    "{name} must be an integer within {min}..{max}"
                ))),
            },
        }
    };
    let max_side = req.api.cfg.int("api-image-max-side") as u32;
    let side = i64::from(max_side);
    let mut c = Convert {
        width: int("_width", -side, side)?.unwrap_or(0) as i32,
        height: int("_height", -side, side)?.unwrap_or(0) as i32,
        max_side,
        max_pixels: req.api.cfg.int("api-image-max-pixels") as u64,
        max_input_side: req.api.cfg.int("api-image-max-input-side") as u32,
        max_memory: req.api.cfg.int("api-image-max-memory").max(0) as u64,
        ..Convert::default()
    };
    if let Some(q) = int("_quality", 1, 100)? {
        c.quality = q as u8;
    }
    if let Some(ext) = req.param("_ext").filter(|e| !e.is_empty()) {
        c.format = Format::parse(ext).map_err(|e| ApiError::bad(e.to_string()))?;
    }
    Ok(c)
}

/// Converts an upload on the blocking pool, at most `-api-image-jobs` at once in this worker:
/// decoding and resizing hold tens of megabytes each, so they wait their turn instead of growing
/// the blocking pool and the worker's memory without bound.
pub(crate) async fn convert(req: &Req, data: Vec<u8>, c: Convert) -> Result<Converted, ApiError> {
    let _permit = req
        .api
        .image_jobs
        .acquire()
        .await
        .map_err(|e| ApiError::internal(format!("image conversion: {e}")))?;
    tokio::task::spawn_blocking(move || crate::image::convert(&data, &c))
        .await
        .map_err(|e| ApiError::internal(format!("image conversion failed: {e}")))?
        .map_err(|e: ImageError| {
            if e.is_caller_error() {
                ApiError::bad(format!("icon: {e}"))
            } else {
                ApiError::internal(format!("icon: {e}"))
            }
        })
}

/// Writes a file atomically (a temporary sibling, then a rename), creating its directories.
pub(crate) async fn write_file(path: PathBuf, data: Vec<u8>) -> Result<(), ApiError> {
    let shown = path.display().to_string();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let dir = path
            .parent()
            .ok_or_else(|| std::io::Error::other("no directory"))?;
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
            hex::encode(rand::random::<[u8; 6]>())
        ));
        let written = std::fs::write(&tmp, &data).and_then(|_| std::fs::rename(&tmp, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    })
    .await
    .map_err(|e| ApiError::internal(format!("write {shown}: {e}")))?
    .map_err(|e| ApiError::internal(format!("write {shown}: {e}")))
}

/// Removes a file; a missing one is fine, other failures are logged.
pub(crate) async fn remove_file(path: PathBuf) {
    let shown = path.display().to_string();
    match tokio::task::spawn_blocking(move || std::fs::remove_file(&path)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
        Ok(Err(e)) => tracing::warn!("remove {shown}: {e}"),
        Err(e) => tracing::warn!("remove {shown}: {e}"),
    }
}

/// Image types a browser renders only as images (not SVG, which can carry scripts): these are
/// served inline; every other stored file is served as an attachment.
pub(crate) fn inline_image(content_type: &str) -> bool {
    matches!(
        content_type,
        "image/jpeg" | "image/png" | "image/gif" | "image/webp"
    )
}

/// A file as a reply, or 404 when it is not there.
pub(crate) async fn send_file(path: PathBuf, content_type: &str) -> Result<Out, ApiError> {
    let shown = path.display().to_string();
    let data = match tokio::task::spawn_blocking(move || std::fs::read(&path)).await {
        Ok(Ok(d)) => d,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!("{shown} is missing");
            return Err(ApiError::not_found("Not found"));
        }
        Ok(Err(e)) => return Err(ApiError::internal(format!("read {shown}: {e}"))),
        Err(e) => return Err(ApiError::internal(format!("read {shown}: {e}"))),
    };
    let mut reply: Reply = hyper::Response::new(Either::Left(Full::new(Bytes::from(data))));
    let h = reply.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_str(content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=0"),
    );
    // Files users upload are data, never pages of this origin: no sniffing, no scripts, and a
    // download unless the type is an image a browser only ever renders as one.
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    if !inline_image(content_type) {
        h.insert(CONTENT_DISPOSITION, HeaderValue::from_static("attachment"));
    }
    Ok(Out::Reply(reply))
}
