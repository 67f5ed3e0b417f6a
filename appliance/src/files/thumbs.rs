//! Previews of images: JPEG, PNG, WebP and GIF (its first frame) are
//! decoded under strict limits (12000 × 12000 pixels, 256 MiB), turned
//! upright by their EXIF orientation, scaled to fit 320 and 1280 pixels
//! (`fast_image_resize`) and re-encoded as JPEG, so no metadata of the
//! original is carried over. One image at a time, box-wide, within a time
//! budget (`web::files`): a hostile image cannot stall the box.

use std::io::{BufReader, Cursor};
use std::path::Path;

use fast_image_resize::{PixelType, ResizeOptions, Resizer, images::Image};
use image::{DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage};

/// Images larger than this on either side are refused (a decompression
/// bomb states huge dimensions in a few bytes).
pub const MAX_SIDE: u32 = 12_000;
/// What a decoder may allocate at once.
pub const MAX_ALLOC: u64 = 256 << 20;
/// The previews made: their longest side in pixels.
pub const SIZES: [u32; 2] = [320, 1280];

#[derive(Debug, PartialEq, Eq)]
pub enum ThumbError {
    /// Over [`MAX_SIDE`]: refused.
    TooLarge { width: u32, height: u32 },
    /// Not an image this decoder reads (corrupt, or another format): the
    /// file stays a file, without a preview.
    Undecodable(String),
}

/// What was made: the upright image's size, and the previews' bytes by
/// size (only those smaller than the original).
pub struct Previews {
    pub width: u32,
    pub height: u32,
    pub jpegs: Vec<(u32, Vec<u8>)>,
}

fn undecodable(e: impl std::fmt::Display) -> ThumbError {
    ThumbError::Undecodable(e.to_string())
}

/// The previews of the image in `path`. Blocking, CPU-bound.
pub fn previews(path: &Path) -> Result<Previews, ThumbError> {
    let open = || -> Result<ImageReader<BufReader<std::fs::File>>, ThumbError> {
        ImageReader::open(path).map_err(undecodable)?.with_guessed_format().map_err(undecodable)
    };
    // the header first: the dimensions it states
    let (width, height) = open()?.into_dimensions().map_err(undecodable)?;
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(ThumbError::TooLarge { width, height });
    }
    let mut reader = open()?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(undecodable)?;
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(undecodable)?;
    img.apply_orientation(orientation);
    let rgb = flatten(img);
    let (w, h) = rgb.dimensions();
    let mut jpegs = Vec::new();
    let mut resizer = Resizer::new();
    let src = Image::from_vec_u8(w, h, rgb.into_raw(), PixelType::U8x3).map_err(undecodable)?;
    for side in SIZES {
        if w.max(h) <= side {
            continue;
        }
        let scale = side as f64 / w.max(h) as f64;
        let (tw, th) = (((w as f64 * scale).round() as u32).max(1), ((h as f64 * scale).round() as u32).max(1));
        let mut dst = Image::new(tw, th, PixelType::U8x3);
        resizer.resize(&src, &mut dst, &ResizeOptions::new()).map_err(undecodable)?;
        let mut out = Cursor::new(Vec::new());
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 82)
            .encode(dst.buffer(), tw, th, image::ExtendedColorType::Rgb8)
            .map_err(undecodable)?;
        jpegs.push((side, out.into_inner()));
    }
    Ok(Previews { width: w, height: h, jpegs })
}

/// RGB, transparency laid on white (as a page shows it).
fn flatten(img: DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return img.to_rgb8();
    }
    let rgba = img.to_rgba8();
    let (w, h) = rgba.dimensions();
    let mut out = RgbImage::new(w, h);
    for (o, p) in out.pixels_mut().zip(rgba.pixels()) {
        let a = p[3] as u32;
        for c in 0..3 {
            o[c] = ((p[c] as u32 * a + 255 * (255 - a)) / 255) as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageFormat, Rgba, RgbaImage};

    fn write(img: &DynamicImage, format: ImageFormat) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        img.save_with_format(f.path(), format).unwrap();
        f
    }

    fn decode(jpeg: &[u8]) -> DynamicImage {
        image::load_from_memory_with_format(jpeg, ImageFormat::Jpeg).unwrap()
    }

    #[test]
    fn two_sizes_that_keep_the_shape_and_nothing_bigger_than_the_original() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(2000, 1000, |x, _| image::Rgb([(x % 256) as u8, 40, 90])));
        for format in [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::WebP, ImageFormat::Gif] {
            let f = write(&img, format);
            let p = previews(f.path()).unwrap();
            assert_eq!((p.width, p.height), (2000, 1000), "{format:?}");
            let sizes: Vec<(u32, u32)> = p.jpegs.iter().map(|(_, j)| decode(j)).map(|d| (d.width(), d.height())).collect();
            assert_eq!(sizes, [(320, 160), (1280, 640)], "{format:?}");
        }
        let small = write(&DynamicImage::ImageRgb8(RgbImage::new(300, 200)), ImageFormat::Png);
        let p = previews(small.path()).unwrap();
        assert!(p.jpegs.is_empty(), "smaller than the smallest preview: the original serves");
    }

    #[test]
    fn transparency_is_laid_on_white() {
        let img = DynamicImage::ImageRgba8(RgbaImage::from_pixel(640, 640, Rgba([0, 0, 0, 0])));
        let p = previews(write(&img, ImageFormat::Png).path()).unwrap();
        let px = decode(&p.jpegs[0].1).to_rgb8().get_pixel(10, 10).0;
        assert!(px.iter().all(|&c| c > 245), "{px:?}");
    }

    #[test]
    fn exif_orientation_turns_the_preview_upright() {
        // a 600×400 JPEG whose EXIF says "rotate 90° clockwise" (orientation 6)
        let img = DynamicImage::ImageRgb8(RgbImage::new(600, 400));
        let mut jpeg = Vec::new();
        img.write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg).unwrap();
        let exif: &[u8] = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0";
        let mut app1 = vec![0xff, 0xe1];
        app1.extend_from_slice(&((exif.len() + 2) as u16).to_be_bytes());
        app1.extend_from_slice(exif);
        jpeg.splice(2..2, app1);
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), &jpeg).unwrap();
        let p = previews(f.path()).unwrap();
        assert_eq!((p.width, p.height), (400, 600), "upright");
        let d = decode(&p.jpegs[0].1);
        assert_eq!((d.width(), d.height()), (213, 320));
    }

    #[test]
    fn a_decompression_bomb_is_refused_from_its_header_and_garbage_is_no_image() {
        // a PNG header stating 100000 × 100000 pixels, and no data to speak of
        let chunk = |png: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
            png.extend_from_slice(&(data.len() as u32).to_be_bytes());
            png.extend_from_slice(kind);
            png.extend_from_slice(data);
            let mut crc = crc32fast::Hasher::new();
            crc.update(kind);
            crc.update(data);
            png.extend_from_slice(&crc.finalize().to_be_bytes());
        };
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        chunk(&mut png, b"IHDR", &[&100_000u32.to_be_bytes()[..], &100_000u32.to_be_bytes()[..], &[8, 2, 0, 0, 0]].concat());
        chunk(&mut png, b"IDAT", &[0x78, 0x9c, 0x03, 0x00]);
        chunk(&mut png, b"IEND", &[]);
        assert!(png.len() < 100, "a few bytes");
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), &png).unwrap();
        assert_eq!(previews(f.path()).err(), Some(ThumbError::TooLarge { width: 100_000, height: 100_000 }));
        std::fs::write(f.path(), b"\x89PNG\r\n\x1a\nnot really").unwrap();
        assert!(matches!(previews(f.path()), Err(ThumbError::Undecodable(_))));
    }
}
