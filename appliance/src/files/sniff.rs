//! A file's type from its first bytes (never from what the sender says),
//! and how the download origin may serve it.

/// The MIME type of a file starting with `head`, named `name` (the name
/// only tells apart the formats that are ZIP archives inside).
pub fn mime(head: &[u8], name: &str) -> &'static str {
    let starts = |m: &[u8]| head.starts_with(m);
    let at = |i: usize, m: &[u8]| head.get(i..i + m.len()) == Some(m);
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    if starts(b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else if starts(b"\xff\xd8\xff") {
        "image/jpeg"
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        "image/gif"
    } else if starts(b"RIFF") && at(8, b"WEBP") {
        "image/webp"
    } else if starts(b"RIFF") && at(8, b"WAVE") {
        "audio/wav"
    } else if starts(b"%PDF-") {
        "application/pdf"
    } else if at(4, b"ftyp") {
        if at(8, b"M4A ") { "audio/mp4" } else if at(8, b"qt  ") { "video/quicktime" } else { "video/mp4" }
    } else if starts(b"\x1a\x45\xdf\xa3") {
        "video/webm"
    } else if starts(b"OggS") {
        "audio/ogg"
    } else if starts(b"ID3") || starts(b"\xff\xfb") || starts(b"\xff\xf3") || starts(b"\xff\xf2") {
        "audio/mpeg"
    } else if starts(b"fLaC") {
        "audio/flac"
    } else if starts(b"PK\x03\x04") {
        match ext.as_str() {
            "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
            "odt" => "application/vnd.oasis.opendocument.text",
            "ods" => "application/vnd.oasis.opendocument.spreadsheet",
            "odp" => "application/vnd.oasis.opendocument.presentation",
            _ => "application/zip",
        }
    } else if starts(b"\x1f\x8b") {
        "application/gzip"
    } else if starts(b"7z\xbc\xaf\x27\x1c") {
        "application/x-7z-compressed"
    } else if is_text(head) {
        "text/plain"
    } else {
        "application/octet-stream"
    }
}

/// UTF-8 (a character cut at the end of the sample aside) with no NUL or
/// other binary control bytes.
fn is_text(head: &[u8]) -> bool {
    if head.is_empty() || head.iter().any(|&b| b == 0 || (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c))) {
        return false;
    }
    match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none() && head.len() - e.valid_up_to() < 4,
    }
}

/// Images this box makes previews of (decoded under limits, files::thumbs).
pub fn previewed(mime: &str) -> bool {
    matches!(mime, "image/png" | "image/jpeg" | "image/gif" | "image/webp")
}

/// Types a browser may show in place (images, audio, video, plain text);
/// everything else downloads. Never SVG or HTML (they can run script).
pub fn inline(mime: &str) -> bool {
    matches!(
        mime,
        "image/png" | "image/jpeg" | "image/gif" | "image/webp" | "audio/wav" | "audio/mp4" | "audio/ogg" | "audio/mpeg"
            | "audio/flac" | "video/mp4" | "video/webm" | "text/plain"
    )
}

/// `Content-Disposition` for `name` (RFC 6266: an ASCII fallback and the
/// UTF-8 name, percent-encoded).
pub fn disposition(inline: bool, name: &str) -> String {
    let ascii: String =
        name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' && c != '%' || c == ' ' { c } else { '_' }).collect();
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    let kind = if inline { "inline" } else { "attachment" };
    format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_come_from_the_bytes_not_the_name() {
        assert_eq!(mime(b"\x89PNG\r\n\x1a\n....", "x.pdf"), "image/png");
        assert_eq!(mime(b"\xff\xd8\xff\xe0", "x"), "image/jpeg");
        assert_eq!(mime(b"RIFF\0\0\0\0WEBPVP8 ", "x"), "image/webp");
        assert_eq!(mime(b"%PDF-1.7\n", "photo.jpg"), "application/pdf");
        assert_eq!(mime(b"\0\0\0\x20ftypisom", "x"), "video/mp4");
        assert_eq!(mime(b"PK\x03\x04....", "Offer.DOCX"), "application/vnd.openxmlformats-officedocument.wordprocessingml.document");
        assert_eq!(mime(b"PK\x03\x04....", "a.zip"), "application/zip");
        assert_eq!(mime("héllo wörld\n".as_bytes(), "notes"), "text/plain");
        assert_eq!(mime(b"<html><script>alert(1)</script>", "x.html"), "text/plain", "HTML is shown as text at most");
        assert_eq!(mime(b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>", "x.svg"), "text/plain");
        assert_eq!(mime(b"\x00\x01\x02", "x.txt"), "application/octet-stream");
        assert_eq!(mime(&"é".as_bytes()[..1], "x"), "text/plain", "a character cut by the sample");
        assert_eq!(mime(b"", "x"), "application/octet-stream");
    }

    #[test]
    fn only_safe_types_show_in_place() {
        assert!(inline("image/png") && inline("video/mp4") && inline("text/plain"));
        assert!(!inline("image/svg+xml") && !inline("text/html") && !inline("application/pdf") && !inline("application/octet-stream"));
    }

    #[test]
    fn names_are_encoded_for_the_header() {
        assert_eq!(disposition(false, "report.pdf"), "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf");
        assert_eq!(
            disposition(true, "Café \"menu\".png"),
            "inline; filename=\"Caf_ _menu_.png\"; filename*=UTF-8''Caf%C3%A9%20%22menu%22.png"
        );
        assert!(!disposition(false, "a\r\nSet-Cookie: x").contains('\n'));
    }
}
