//! The site's files, read once at start into an immutable in-memory table.
//!
//! `static-main` answers every file request from this table: no file system access, no
//! blocking thread pool and no compression per request. A new `www/` shows after a restart
//! (`cargo xtask redeploy static` starts a new process).

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::http::header::{HeaderValue, HttpDate};
use actix_web::web::Bytes;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

/// The most file bytes [`Www::load`] keeps in memory (gzip variants not counted).
pub const MAX_TOTAL_BYTES: u64 = 64 * 1024 * 1024;

/// One file, ready to send.
#[derive(Debug)]
pub struct Asset {
    /// The file's bytes.
    pub body: Bytes,
    /// The file gzip-compressed, when that is meaningfully smaller.
    pub gzip: Option<Bytes>,
    /// `Content-Type`, with `charset=utf-8` for text.
    pub content_type: HeaderValue,
    /// Strong ETag of `body`, derived from its content.
    pub etag: HeaderValue,
    /// Strong ETag of `gzip` (other bytes, so another tag).
    pub gzip_etag: Option<HeaderValue>,
    /// `Last-Modified`: the file's modification time, when the file system reports one.
    pub last_modified: Option<HeaderValue>,
    /// The modification time in whole seconds since the Unix epoch, for `If-Modified-Since`.
    pub modified_secs: Option<u64>,
    /// Whether this is an HTML page (pages always revalidate, whatever their URL).
    pub is_html: bool,
    /// Whether the type is one that gzip shrinks (text, JSON, SVG, Wasm): its answers say
    /// `Vary: Accept-Encoding`, whether or not this file has a gzip variant.
    pub compressible: bool,
}

/// The files of a www directory, keyed by URL path (`/index.html`, `/pkg/client.js`).
///
/// A directory holding `index.html` is also a key (`/`, `/docs`), answering that page. Only
/// regular files under the directory are present: dotfiles, and symbolic links leading out of
/// it, are left out; so a lookup can never reach anything else.
#[derive(Debug, Default)]
pub struct Www {
    files: HashMap<String, Arc<Asset>>,
    file_count: usize,
    total_bytes: u64,
    gzip_count: usize,
}

/// Why a www directory could not be loaded.
#[derive(Debug)]
pub enum WwwError {
    /// The directory does not exist.
    Missing(PathBuf),
    /// The path names something other than a directory.
    NotADirectory(PathBuf),
    /// A directory or file could not be read.
    Unreadable(PathBuf, io::Error),
    /// The files add up to more than the limit.
    TooLarge {
        /// The www directory.
        dir: PathBuf,
        /// The limit, in bytes.
        limit: u64,
        /// The file that went over it.
        at: PathBuf,
    },
}

impl fmt::Display for WwwError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WwwError::Missing(dir) => write!(
                f,
                "the www directory {} does not exist; build the site first or pass --www (env ORIGIN_WWW)",
                dir.display()
            ),
            WwwError::NotADirectory(path) => write!(
                f,
                "{} is not a directory; pass the site's www directory with --www (env ORIGIN_WWW)",
                path.display()
            ),
            WwwError::Unreadable(path, err) => write!(
                f,
                "cannot read {} ({err}); the static tier loads every file of the www directory at start, so fix its permissions or pass another --www (env ORIGIN_WWW)",
                path.display()
            ),
            WwwError::TooLarge { dir, limit, at } => {
                const MIB: u64 = 1024 * 1024;
                let limit = if limit % MIB == 0 {
                    format!("{} MiB", limit / MIB)
                } else {
                    format!("{limit} bytes")
                };
                write!(
                    f,
                    "the files in {} add up to more than {limit} (reached at {}); the static tier keeps every file in memory, so move large files out of the www directory",
                    dir.display(),
                    at.display()
                )
            }
        }
    }
}

impl std::error::Error for WwwError {}

impl Www {
    /// Reads every file under `dir` (up to [`MAX_TOTAL_BYTES`]) and compresses what is worth it.
    pub fn load(dir: &Path) -> Result<Www, WwwError> {
        Www::load_with_limit(dir, MAX_TOTAL_BYTES)
    }

    /// [`Www::load`] with another size limit.
    pub fn load_with_limit(dir: &Path, limit: u64) -> Result<Www, WwwError> {
        match fs::metadata(dir) {
            Ok(metadata) if metadata.is_dir() => {}
            Ok(_) => return Err(WwwError::NotADirectory(dir.to_owned())),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(WwwError::Missing(dir.to_owned()))
            }
            Err(err) => return Err(WwwError::Unreadable(dir.to_owned(), err)),
        }
        let root = dir
            .canonicalize()
            .map_err(|err| WwwError::Unreadable(dir.to_owned(), err))?;
        let mut found = Vec::new();
        collect_files(&root, &root, &mut found)?;

        let mut contents: HashMap<String, (Bytes, SystemTime)> = HashMap::new();
        let mut total_bytes = 0u64;
        for (key, path) in found {
            let unreadable = |err| WwwError::Unreadable(path.clone(), err);
            let mut file = fs::File::open(&path).map_err(unreadable)?;
            let metadata = file.metadata().map_err(unreadable)?;
            if total_bytes + metadata.len() > limit {
                return Err(too_large(dir, limit, &path));
            }
            // Read at most what is left of the limit, in case the file grows meanwhile.
            let mut body = Vec::with_capacity(metadata.len() as usize);
            (&mut file)
                .take(limit - total_bytes + 1)
                .read_to_end(&mut body)
                .map_err(unreadable)?;
            total_bytes += body.len() as u64;
            if total_bytes > limit {
                return Err(too_large(dir, limit, &path));
            }
            let modified = metadata.modified().unwrap_or(UNIX_EPOCH);
            contents.insert(key, (Bytes::from(body), modified));
        }

        let mut www = Www {
            files: HashMap::with_capacity(contents.len()),
            file_count: contents.len(),
            total_bytes,
            gzip_count: 0,
        };
        for (key, (body, modified)) in &contents {
            let sibling = contents.get(&format!("{key}.gz")).map(|(gz, _)| gz);
            let asset = Asset::new(key, body.clone(), *modified, sibling);
            www.gzip_count += usize::from(asset.gzip.is_some());
            www.files.insert(key.clone(), Arc::new(asset));
        }
        // A directory's URL answers its index.html.
        let indexes: Vec<(String, Arc<Asset>)> = www
            .files
            .iter()
            .filter_map(|(key, asset)| {
                let dir = key.strip_suffix("/index.html")?;
                let dir = if dir.is_empty() { "/" } else { dir };
                Some((dir.to_owned(), Arc::clone(asset)))
            })
            .collect();
        for (dir, asset) in indexes {
            www.files.entry(dir).or_insert(asset);
        }
        Ok(www)
    }

    /// The file at a normalised URL path (see [`lookup_key`]).
    pub fn get(&self, key: &str) -> Option<&Asset> {
        self.files.get(key).map(|asset| &**asset)
    }

    /// How many files were loaded.
    pub fn file_count(&self) -> usize {
        self.file_count
    }

    /// How many bytes the loaded files hold (gzip variants not counted).
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// How many files have a gzip variant.
    pub fn gzip_count(&self) -> usize {
        self.gzip_count
    }
}

fn too_large(dir: &Path, limit: u64, at: &Path) -> WwwError {
    WwwError::TooLarge {
        dir: dir.to_owned(),
        limit,
        at: at.to_owned(),
    }
}

/// Appends `(URL path, file)` for every file under `dir`, skipping dotfiles and links that lead
/// out of `root` or to a directory.
fn collect_files(
    root: &Path,
    dir: &Path,
    found: &mut Vec<(String, PathBuf)>,
) -> Result<(), WwwError> {
    let unreadable = |err| WwwError::Unreadable(dir.to_owned(), err);
    for entry in fs::read_dir(dir).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            tracing::warn!(file = %path.display(), "skipped: the name is not UTF-8");
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let file_type = entry
            .file_type()
            .map_err(|err| WwwError::Unreadable(path.clone(), err))?;
        if file_type.is_dir() {
            collect_files(root, &path, found)?;
            continue;
        }
        let target = if file_type.is_symlink() {
            match path.canonicalize() {
                Ok(target) if target.starts_with(root) && target.is_file() => target,
                _ => {
                    tracing::warn!(file = %path.display(), "skipped: a link to a directory, to nothing or out of the www directory");
                    continue;
                }
            }
        } else if file_type.is_file() {
            path.clone()
        } else {
            continue;
        };
        let relative = path.strip_prefix(root).unwrap_or(&path);
        let mut key = String::new();
        for part in relative.components() {
            key.push('/');
            key.push_str(&part.as_os_str().to_string_lossy());
        }
        found.push((key, target));
    }
    Ok(())
}

impl Asset {
    /// Describes one file; `sibling_gz` is the content of `<file>.gz`, used as the gzip variant
    /// when it decompresses to exactly `body` (e.g. Zopfli output from the client's build).
    fn new(key: &str, body: Bytes, modified: SystemTime, sibling_gz: Option<&Bytes>) -> Asset {
        let (content_type, compressible) = content_type(key);
        let gzip = if compressible {
            sibling_gz
                .filter(|gz| gunzips_to(gz, &body))
                .cloned()
                .or_else(|| gzip(&body))
                .filter(|gz| gz.len() <= body.len() / 10 * 9)
        } else {
            None
        };
        let tag = content_tag(&body);
        let etag = header_value(format!("\"{tag}\""));
        let gzip_etag = gzip
            .as_ref()
            .map(|_| header_value(format!("\"{tag}-gzip\"")));
        let modified_secs = modified
            .duration_since(UNIX_EPOCH)
            .ok()
            .filter(|since| !since.is_zero())
            .map(|since| since.as_secs());
        let last_modified =
            modified_secs.map(|_| header_value(HttpDate::from(modified).to_string()));
        Asset {
            body,
            gzip,
            content_type: HeaderValue::from_static(content_type),
            etag,
            gzip_etag,
            last_modified,
            modified_secs,
            is_html: content_type.starts_with("text/html"),
            compressible,
        }
    }
}

fn header_value(text: String) -> HeaderValue {
    HeaderValue::try_from(text).expect("ETags and HTTP dates are visible ASCII")
}

/// A tag derived from the content alone (64-bit FNV-1a and the length), so an unchanged file
/// keeps its ETag across restarts and builds.
fn content_tag(body: &[u8]) -> String {
    let hash = body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}-{:x}", body.len())
}

/// The file's gzip compression at the best level, or `None` if compressing failed.
fn gzip(body: &[u8]) -> Option<Bytes> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 2), Compression::best());
    encoder.write_all(body).ok()?;
    encoder.finish().ok().map(Bytes::from)
}

/// Whether `gz` is a gzip stream of exactly `body`.
fn gunzips_to(gz: &[u8], body: &[u8]) -> bool {
    let mut plain = Vec::with_capacity(body.len());
    // One byte more than expected is enough to tell a longer stream apart.
    GzDecoder::new(gz)
        .take(body.len() as u64 + 1)
        .read_to_end(&mut plain)
        .is_ok_and(|_| plain == body)
}

/// `Content-Type` for a URL path, and whether gzip helps that type.
fn content_type(key: &str) -> (&'static str, bool) {
    let extension = key
        .rsplit_once('/')
        .map_or(key, |(_, name)| name)
        .rsplit_once('.')
        .map(|(_, extension)| extension.to_ascii_lowercase());
    match extension.as_deref() {
        Some("html" | "htm") => ("text/html; charset=utf-8", true),
        Some("css") => ("text/css; charset=utf-8", true),
        Some("js" | "mjs") => ("text/javascript; charset=utf-8", true),
        Some("json" | "map") => ("application/json", true),
        Some("webmanifest") => ("application/manifest+json", true),
        Some("wasm") => ("application/wasm", true),
        Some("svg") => ("image/svg+xml", true),
        Some("txt") => ("text/plain; charset=utf-8", true),
        Some("csv") => ("text/csv; charset=utf-8", true),
        Some("xml") => ("text/xml", true),
        Some("ico") => ("image/x-icon", true),
        Some("png") => ("image/png", false),
        Some("jpg" | "jpeg") => ("image/jpeg", false),
        Some("gif") => ("image/gif", false),
        Some("webp") => ("image/webp", false),
        Some("avif") => ("image/avif", false),
        Some("woff") => ("font/woff", false),
        Some("woff2") => ("font/woff2", false),
        Some("gz") => ("application/gzip", false),
        Some("pdf") => ("application/pdf", false),
        _ => ("application/octet-stream", false),
    }
}

/// The table key for a raw request path: percent-decoded, with empty and `.` segments
/// dropped (`/pkg//a.js` and `/./pkg/a.js` are `/pkg/a.js`; `/` and `/docs/` are `/` and
/// `/docs`). `None` when the path is not UTF-8 once decoded, or holds a `..` segment.
///
/// Borrows the path when it is already in that form, the common case.
pub fn lookup_key(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    let is_plain = raw == "/"
        || (raw.starts_with('/')
            && !raw.contains('%')
            && raw[1..]
                .split('/')
                .all(|segment| !matches!(segment, "" | "." | "..")));
    if is_plain {
        return Some(raw.into());
    }
    let decoded = String::from_utf8(crate::percent_decode(raw)).ok()?;
    let mut key = String::with_capacity(decoded.len());
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => return None,
            _ => {
                key.push('/');
                key.push_str(segment);
            }
        }
    }
    if key.is_empty() {
        key.push('/');
    }
    Some(key.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_normalised_paths() {
        for (raw, key) in [
            ("/", Some("/")),
            ("/index.html", Some("/index.html")),
            ("/pkg/client.js", Some("/pkg/client.js")),
            ("/pkg/", Some("/pkg")),
            ("//pkg//client.js", Some("/pkg/client.js")),
            ("/./index.html", Some("/index.html")),
            ("/%69ndex.html", Some("/index.html")),
            ("/a%20b.txt", Some("/a b.txt")),
            ("/%2e%2e/secret", None),
            ("/../secret", None),
            ("/%ff", None),
        ] {
            assert_eq!(lookup_key(raw).as_deref(), key, "{raw}");
        }
    }

    #[test]
    fn types_follow_the_extension() {
        assert_eq!(
            content_type("/pkg/client_bg.wasm"),
            ("application/wasm", true)
        );
        assert_eq!(
            content_type("/pkg/client.js"),
            ("text/javascript; charset=utf-8", true)
        );
        assert_eq!(content_type("/INDEX.HTML").0, "text/html; charset=utf-8");
        assert_eq!(content_type("/logo.png"), ("image/png", false));
        assert_eq!(
            content_type("/v1.0/README"),
            ("application/octet-stream", false)
        );
    }

    #[test]
    fn tags_depend_on_the_content_only() {
        assert_eq!(content_tag(b"abc"), content_tag(b"abc"));
        assert_ne!(content_tag(b"abc"), content_tag(b"abd"));
    }

    #[test]
    fn a_matching_gz_sibling_is_reused_and_a_stale_one_ignored() {
        let body = Bytes::from("body { color: red; }\n".repeat(100));
        let mut sibling = gzip(&body).unwrap().to_vec();
        // The header's OS byte: marks this stream as the sibling, not a fresh compression.
        sibling[9] = 0x42;
        let sibling = Bytes::from(sibling);
        let asset = Asset::new("/a.css", body.clone(), UNIX_EPOCH, Some(&sibling));
        assert_eq!(asset.gzip.as_ref(), Some(&sibling));

        let stale = gzip(b"body { color: blue; }\n").unwrap();
        let asset = Asset::new("/a.css", body, UNIX_EPOCH, Some(&stale));
        assert_ne!(asset.gzip.as_ref(), Some(&stale));
        assert!(asset.gzip.is_some());
    }
}
