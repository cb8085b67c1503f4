//! Images in process with the `image` crate (the original shelled out to ImageMagick): decode an
//! upload whatever its format, resize it (`_width`, `_height`; a negative size never upscales,
//! 0 keeps the original), and re-encode it as jpg, png, gif or webp (`_quality` for jpg). Decoding
//! is bounded (pixels, width and height, and the decoder's memory: `-api-image-max-pixels`,
//! `-api-image-max-input-side`, `-api-image-max-memory`), so a small file cannot expand into a
//! huge bitmap; each limit is a caller error (400) naming its parameter.
//!
//! Everything here is CPU work: callers on an async runtime run it on the blocking pool.

use ::image::{imageops::FilterType, DynamicImage, ImageFormat, ImageReader, Limits};
use std::io::Cursor;

/// The default largest width or height of an image decoded (`-api-image-max-input-side`).
pub const DEFAULT_MAX_INPUT_SIDE: u32 = 8192;

/// The default largest side of a produced image (`-api-image-max-side`).
pub const DEFAULT_MAX_OUTPUT: u32 = 4096;

/// The default memory the decoder may use for one image (`-api-image-max-memory`).
pub const DEFAULT_MAX_MEMORY: u64 = 256 * 1024 * 1024;

/// Why an image was refused (all but `Encode` are the caller's fault).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ImageError {
    #[error("not an image or an unsupported format: {0}")]
    NotAnImage(String),
    #[error("the image is wider or taller than {0} pixels (-api-image-max-input-side)")]
    TooLarge(u32),
    #[error("decoding the image needs more than {0} bytes (-api-image-max-memory)")]
    TooMuchMemory(u64),
    #[error("the image has more than {0} pixels (-api-image-max-pixels)")]
    TooManyPixels(u64),
    #[error("bad size: {0}")]
    BadSize(String),
    #[error("unknown image format {0:?} (jpg, png, gif or webp)")]
    BadFormat(String),
    #[error("cannot encode the image: {0}")]
    Encode(String),
}

impl ImageError {
    /// The request was wrong (4xx) rather than the server.
    pub fn is_caller_error(&self) -> bool {
        !matches!(self, ImageError::Encode(_))
    }
}

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
    Gif,
    Webp,
}

impl Format {
    /// `jpg`/`jpeg`, `png`, `gif`, `webp` (case-insensitive, a leading dot allowed).
    pub fn parse(ext: &str) -> Result<Format, ImageError> {
        match ext.trim_start_matches('.').to_ascii_lowercase().as_str() {
            "jpg" | "jpeg" => Ok(Format::Jpeg),
            "png" => Ok(Format::Png),
            "gif" => Ok(Format::Gif),
            "webp" => Ok(Format::Webp),
            _ => Err(ImageError::BadFormat(ext.to_string())),
        }
    }

    /// The file extension stored images get.
    pub fn ext(self) -> &'static str {
        match self {
            Format::Jpeg => "jpg",
            Format::Png => "png",
            Format::Gif => "gif",
            Format::Webp => "webp",
        }
    }

    /// The Content-Type served for it.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::Gif => "image/gif",
            Format::Webp => "image/webp",
        }
    }
}

/// What to make of an image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Convert {
    /// Wanted width: 0 = from the height (or the original), negative = at most this, never larger
    /// than the original.
    pub width: i32,
    /// Wanted height, the same way.
    pub height: i32,
    pub format: Format,
    /// JPEG quality 1..=100.
    pub quality: u8,
    /// The largest width or height this conversion may produce (`-api-image-max-side`).
    pub max_side: u32,
    /// The most pixels (width times height) an input may have (`-api-image-max-pixels`).
    pub max_pixels: u64,
    /// The largest width or height of an input (`-api-image-max-input-side`).
    pub max_input_side: u32,
    /// Memory the decoder may use for the input (`-api-image-max-memory`).
    pub max_memory: u64,
}

impl Default for Convert {
    fn default() -> Convert {
        Convert {
            width: 0,
            height: 0,
            format: Format::Jpeg,
            quality: 80,
            max_side: DEFAULT_MAX_OUTPUT,
            max_pixels: u64::from(DEFAULT_MAX_INPUT_SIDE) * u64::from(DEFAULT_MAX_INPUT_SIDE),
            max_input_side: DEFAULT_MAX_INPUT_SIDE,
            max_memory: DEFAULT_MAX_MEMORY,
        }
    }
}

/// An encoded image and its size.
#[derive(Debug, Clone)]
pub struct Converted {
    pub data: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub format: Format,
}

/// The output size for a `src_w`×`src_h` image (see [`Convert`]).
pub fn target_size(
    src_w: u32,
    src_h: u32,
    width: i32,
    height: i32,
    max_side: u32,
) -> Result<(u32, u32), ImageError> {
    let want = |v: i32, src: u32| -> Option<u32> {
        match v {
            0 => None,
            v if v < 0 => Some(v.unsigned_abs().min(src)),
            v => Some(v as u32),
        }
    };
    let scale = |n: u32, num: u32, den: u32| -> u32 {
        ((n as f64 * num as f64 / den.max(1) as f64).round() as u32).max(1)
    };
    let (w, h) = match (want(width, src_w), want(height, src_h)) {
        (None, None) => (src_w, src_h),
        (Some(w), Some(h)) => (w, h),
        (Some(w), None) => (w, scale(src_h, w, src_w)),
        (None, Some(h)) => (scale(src_w, h, src_h), h),
    };
    let max = max_side;
    if w == 0 || h == 0 || w > max || h > max {
        return Err(ImageError::BadSize(format!(
            "{w}x{h} is outside 1..{max} on a side (-api-image-max-side)"
        )));
    }
    Ok((w, h))
}

/// Decodes `data` (any supported format, found from its content), resizes and re-encodes it.
pub fn convert(data: &[u8], c: &Convert) -> Result<Converted, ImageError> {
    let mut reader = ImageReader::new(Cursor::new(data))
        .with_guessed_format()
        .map_err(|e| ImageError::NotAnImage(e.to_string()))?;
    if reader.format().is_none() {
        return Err(ImageError::NotAnImage("unknown content".into()));
    }
    // The header alone tells the size: refuse too many pixels or too long a side before
    // decoding anything.
    if let Ok((w, h)) = ImageReader::new(Cursor::new(data))
        .with_guessed_format()
        .map_err(|e| ImageError::NotAnImage(e.to_string()))?
        .into_dimensions()
    {
        if w > c.max_input_side || h > c.max_input_side {
            return Err(ImageError::TooLarge(c.max_input_side));
        }
        if u64::from(w) * u64::from(h) > c.max_pixels {
            return Err(ImageError::TooManyPixels(c.max_pixels));
        }
    }
    // The decoder checks the same sides again, and its allocations.
    let mut limits = Limits::default();
    limits.max_image_width = Some(c.max_input_side);
    limits.max_image_height = Some(c.max_input_side);
    limits.max_alloc = Some(c.max_memory);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| match e {
        ::image::ImageError::Limits(l) => match l.kind() {
            ::image::error::LimitErrorKind::DimensionError => {
                ImageError::TooLarge(c.max_input_side)
            }
            _ => ImageError::TooMuchMemory(c.max_memory),
        },
        other => ImageError::NotAnImage(other.to_string()),
    })?;
    let (w, h) = target_size(img.width(), img.height(), c.width, c.height, c.max_side)?;
    let img = if (w, h) == (img.width(), img.height()) {
        img
    } else {
        img.resize_exact(w, h, FilterType::Lanczos3)
    };
    let data = encode(&img, c)?;
    Ok(Converted {
        data,
        width: w,
        height: h,
        format: c.format,
    })
}

fn encode(img: &DynamicImage, c: &Convert) -> Result<Vec<u8>, ImageError> {
    let mut out = Cursor::new(Vec::new());
    let fail = |e: ::image::ImageError| ImageError::Encode(e.to_string());
    match c.format {
        Format::Jpeg => {
            // JPEG has no alpha channel.
            let rgb = DynamicImage::ImageRgb8(img.to_rgb8());
            let enc = ::image::codecs::jpeg::JpegEncoder::new_with_quality(
                &mut out,
                c.quality.clamp(1, 100),
            );
            rgb.write_with_encoder(enc).map_err(fail)?;
        }
        Format::Png => match img {
            DynamicImage::ImageLuma8(_)
            | DynamicImage::ImageLumaA8(_)
            | DynamicImage::ImageRgb8(_)
            | DynamicImage::ImageRgba8(_) => {
                img.write_to(&mut out, ImageFormat::Png).map_err(fail)?
            }
            other => DynamicImage::ImageRgba8(other.to_rgba8())
                .write_to(&mut out, ImageFormat::Png)
                .map_err(fail)?,
        },
        Format::Gif => DynamicImage::ImageRgba8(img.to_rgba8())
            .write_to(&mut out, ImageFormat::Gif)
            .map_err(fail)?,
        Format::Webp => {
            let converted = if img.color().has_alpha() {
                DynamicImage::ImageRgba8(img.to_rgba8())
            } else {
                DynamicImage::ImageRgb8(img.to_rgb8())
            };
            converted
                .write_to(&mut out, ImageFormat::WebP)
                .map_err(fail)?
        }
    }
    Ok(out.into_inner())
}

/// The format of encoded image data, from its content.
pub fn sniff(data: &[u8]) -> Option<Format> {
    match ::image::guess_format(data).ok()? {
        ImageFormat::Jpeg => Some(Format::Jpeg),
        ImageFormat::Png => Some(Format::Png),
        ImageFormat::Gif => Some(Format::Gif),
        ImageFormat::WebP => Some(Format::Webp),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = ::image::RgbaImage::from_fn(w, h, |x, y| {
            ::image::Rgba([(x * 7) as u8, (y * 5) as u8, 90, 200])
        });
        let mut out = Cursor::new(Vec::new());
        DynamicImage::ImageRgba8(img)
            .write_to(&mut out, ImageFormat::Png)
            .expect("png");
        out.into_inner()
    }

    fn dims(data: &[u8]) -> (u32, u32) {
        let img = ::image::load_from_memory(data).expect("decodes");
        (img.width(), img.height())
    }

    #[test]
    fn sizes_follow_the_original_rules() {
        assert_eq!(
            target_size(400, 200, 0, 0, DEFAULT_MAX_INPUT_SIDE),
            Ok((400, 200))
        );
        assert_eq!(
            target_size(400, 200, 128, 128, DEFAULT_MAX_INPUT_SIDE),
            Ok((128, 128))
        );
        assert_eq!(
            target_size(400, 200, 100, 0, DEFAULT_MAX_INPUT_SIDE),
            Ok((100, 50)),
            "aspect kept"
        );
        assert_eq!(
            target_size(400, 200, 0, 100, DEFAULT_MAX_INPUT_SIDE),
            Ok((200, 100))
        );
        assert_eq!(
            target_size(100, 50, -200, 0, DEFAULT_MAX_INPUT_SIDE),
            Ok((100, 50)),
            "negative: no upscale"
        );
        assert_eq!(
            target_size(400, 200, -200, 0, DEFAULT_MAX_INPUT_SIDE),
            Ok((200, 100)),
            "negative: downscale"
        );
        assert_eq!(
            target_size(100, 50, 300, 0, DEFAULT_MAX_INPUT_SIDE),
            Ok((300, 150)),
            "positive upscales"
        );
        assert!(target_size(10, 10, 100_000, 0, DEFAULT_MAX_INPUT_SIDE).is_err());
        // The output cap holds for a size asked for and for one that follows from the aspect.
        assert_eq!(target_size(1, 1, 64, 64, 64), Ok((64, 64)));
        assert!(target_size(1, 1, 65, 64, 64).is_err());
        assert!(
            target_size(1, 2, 64, 0, 64).is_err(),
            "height 128 from the aspect"
        );
    }

    #[test]
    fn converts_between_formats_and_sizes() {
        let src = png(300, 150);
        for (ext, want) in [
            ("jpg", Format::Jpeg),
            ("png", Format::Png),
            ("gif", Format::Gif),
            ("webp", Format::Webp),
        ] {
            let c = Convert {
                width: 128,
                height: 128,
                format: Format::parse(ext).expect("format"),
                quality: 70,
                ..Convert::default()
            };
            let out = convert(&src, &c).expect("convert");
            assert_eq!((out.width, out.height), (128, 128));
            assert_eq!(sniff(&out.data), Some(want), "{ext}");
            assert_eq!(dims(&out.data), (128, 128), "{ext} decodes at its size");
        }
        let kept = convert(
            &src,
            &Convert {
                width: -1000,
                format: Format::Png,
                ..Convert::default()
            },
        )
        .expect("convert");
        assert_eq!(dims(&kept.data), (300, 150));
        assert!(Format::parse("bmp").is_err());
        assert_eq!(Format::parse(".JPEG"), Ok(Format::Jpeg));
    }

    #[test]
    fn each_input_limit_refuses_with_its_parameter() {
        let limited = |side: u32, pixels: u64, memory: u64| Convert {
            format: Format::Png,
            max_input_side: side,
            max_pixels: pixels,
            max_memory: memory,
            ..Convert::default()
        };
        let (generous_side, generous_pixels, generous_memory) = (1000, 1_000_000, 1 << 24);
        // Side: one pixel over on either axis.
        let c = limited(64, generous_pixels, generous_memory);
        assert!(convert(&png(64, 64), &c).is_ok());
        for (w, h) in [(65, 8), (8, 65)] {
            let e = convert(&png(w, h), &c).unwrap_err();
            assert_eq!(e, ImageError::TooLarge(64), "{w}x{h}");
            assert!(e.is_caller_error());
            assert!(e.to_string().contains("-api-image-max-input-side"), "{e}");
        }
        // Pixels.
        let c = limited(generous_side, 100, generous_memory);
        assert!(convert(&png(10, 10), &c).is_ok());
        let e = convert(&png(11, 10), &c).unwrap_err();
        assert_eq!(e, ImageError::TooManyPixels(100));
        assert!(e.to_string().contains("-api-image-max-pixels"), "{e}");
        // Decoder memory: a 100x100 RGBA bitmap is 40000 bytes.
        let c = limited(generous_side, generous_pixels, 30_000);
        let e = convert(&png(100, 100), &c).unwrap_err();
        assert_eq!(e, ImageError::TooMuchMemory(30_000));
        assert!(e.is_caller_error());
        assert!(e.to_string().contains("-api-image-max-memory"), "{e}");
        assert!(convert(
            &png(100, 100),
            &limited(generous_side, generous_pixels, 200_000)
        )
        .is_ok());
    }

    #[test]
    fn refuses_what_is_not_an_image() {
        let e = convert(b"hello, not an image", &Convert::default()).unwrap_err();
        assert!(matches!(e, ImageError::NotAnImage(_)), "{e}");
        assert!(e.is_caller_error());
        let mut truncated = png(64, 64);
        truncated.truncate(60);
        assert!(convert(&truncated, &Convert::default()).is_err());
    }
}
