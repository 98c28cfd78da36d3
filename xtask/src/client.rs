//! `cargo xtask build-client`: the Wasm recovery client, built into www/pkg and sized for
//! HAProxy, which serves the maintenance page and its /pkg/* assets from its own memory.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{cmd, install};

/// Arguments to `wasm-pack`. `--profile wasm-release` is the root manifest's smallest-Wasm
/// profile (lto, panic = "abort"; client/Cargo.toml gives it wasm-opt `-Oz`).
/// `--mode no-install` makes a wasm-bindgen version mismatch fail loudly instead of
/// triggering a download this network cannot do.
pub const WASM_PACK_BUILD: &[&str] = &[
    "build",
    "client",
    "--profile",
    "wasm-release",
    "--target",
    "web",
    "--mode",
    "no-install",
    "--out-dir",
    "../www/pkg",
    "--out-name",
    "client",
    "--no-typescript",
];

use driver::{HAPROXY_FILE_LIMIT, HAPROXY_FILE_WARNING};

/// If `wasm-opt -Oz` can still shrink the module below this share of its size, wasm-pack did
/// not optimise it (it skips wasm-opt silently when none is on PATH).
const UNOPTIMISED_RATIO: f64 = 0.8;

const PKG_DIR: &str = "www/pkg";
const HTML: &str = "www/maintenance.html";
const JS: &str = "www/pkg/client.js";
const WASM: &str = "www/pkg/client_bg.wasm";

/// `cargo xtask build-client`.
pub fn build() -> Result<()> {
    install::wasm_tools()?;
    println!("build-client: wasm-pack {}", WASM_PACK_BUILD.join(" "));
    cmd::run(Command::new("wasm-pack").args(WASM_PACK_BUILD))
        .context("wasm-pack could not build the client; its output above says why")?;
    // wasm-pack writes an npm package; only the module and its glue are served.
    for leftover in ["package.json", "README.md", ".gitignore"] {
        let path = Path::new(PKG_DIR).join(leftover);
        if path.exists() {
            fs::remove_file(&path)
                .with_context(|| format!("could not remove {}", path.display()))?;
        }
    }
    gzip_file(Path::new(JS))?;
    gzip_file(Path::new(WASM))?;

    let assets = [
        Asset::measure(HTML, Served::Raw)?,
        Asset::measure(JS, Served::Gzip)?,
        Asset::measure(WASM, Served::Gzip)?,
    ];
    print_sizes(&assets);
    check_optimised(Path::new(WASM))?;
    check_limits(&assets)
}

/// Which copies of a file haproxy.cfg answers from memory.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Served {
    /// The file itself (the maintenance page).
    Raw,
    /// `<file>.gz` to clients that accept gzip (every browser); others get the raw file from
    /// the static tier, since neither raw file fits one buffer.
    Gzip,
}

/// One file HAProxy serves itself, with its sizes.
struct Asset {
    path: &'static str,
    raw: u64,
    gzip: u64,
    served: Served,
}

impl Asset {
    fn measure(path: &'static str, served: Served) -> Result<Self> {
        let bytes = fs::read(path).with_context(|| {
            format!("could not read {path}; it is part of what HAProxy serves during maintenance")
        })?;
        Ok(Self {
            path,
            raw: bytes.len() as u64,
            gzip: gzip(&bytes)?.len() as u64,
            served,
        })
    }

    /// Each file HAProxy loads for this asset, with its size.
    fn loaded(&self) -> Vec<(String, u64)> {
        let raw = (self.path.to_owned(), self.raw);
        let gz = (format!("{}.gz", self.path), self.gzip);
        match self.served {
            Served::Raw => vec![raw],
            Served::Gzip => vec![gz],
        }
    }
}

fn print_sizes(assets: &[Asset]) {
    println!();
    println!(
        "{:<24} {:>10} {:>10}   HAProxy sends from memory",
        "asset", "raw bytes", "gzip"
    );
    for asset in assets {
        let sends = match asset.served {
            Served::Raw => "raw",
            Served::Gzip => ".gz (raw comes from the origin)",
        };
        println!(
            "{:<24} {:>10} {:>10}   {sends}",
            asset.path, asset.raw, asset.gzip
        );
    }
    println!("limit for each file HAProxy sends: {HAPROXY_FILE_LIMIT} bytes (tune.bufsize)");
    println!();
}

fn check_limits(assets: &[Asset]) -> Result<()> {
    let loaded: Vec<(String, u64)> = assets.iter().flat_map(Asset::loaded).collect();
    let too_big: Vec<String> = loaded
        .iter()
        .filter(|(_, size)| *size > HAPROXY_FILE_LIMIT)
        .map(|(file, size)| format!("{file} is {size} bytes"))
        .collect();
    if !too_big.is_empty() {
        bail!(
            "HAProxy cannot serve these files from one {HAPROXY_FILE_LIMIT}-byte buffer: {}; \
             make them smaller (see the size table above)",
            too_big.join(", ")
        );
    }
    for (file, size) in loaded
        .iter()
        .filter(|(_, size)| *size > HAPROXY_FILE_WARNING)
    {
        println!(
            "warning: {file} is {size} bytes; HAProxy warns above {HAPROXY_FILE_WARNING} \
             because the response headers share its {HAPROXY_FILE_LIMIT}-byte buffer"
        );
    }
    println!("build-client: every file HAProxy sends fits its buffer");
    Ok(())
}

/// Fails when the module is much larger than `wasm-opt -Oz` makes it, i.e. wasm-pack ran
/// without wasm-opt.
fn check_optimised(wasm: &Path) -> Result<()> {
    let before = fs::metadata(wasm)
        .with_context(|| format!("could not read {}", wasm.display()))?
        .len();
    let probe = Path::new("target/xtask/reoptimised.wasm");
    fs::create_dir_all("target/xtask").context("could not create target/xtask")?;
    let mut reoptimise = Command::new("wasm-opt");
    // Only the size matters here, so every feature the module might use is allowed.
    reoptimise
        .args(["-Oz", "--all-features"])
        .arg(wasm)
        .arg("-o")
        .arg(probe);
    let line = cmd::display(&reoptimise);
    cmd::probe(&mut reoptimise).with_context(|| {
        format!("`{line}` failed; run `cargo xtask install` so wasm-opt works, then try again")
    })?;
    let after = fs::metadata(probe)
        .with_context(|| format!("wasm-opt wrote no {}", probe.display()))?
        .len();
    if (after as f64) < (before as f64) * UNOPTIMISED_RATIO {
        bail!(
            "{} looks unoptimised: wasm-opt -Oz still shrinks it from {before} to {after} bytes. \
             wasm-pack skips wasm-opt silently when none is on PATH; run `cargo xtask install` \
             and check that {} runs",
            wasm.display(),
            install::binaryen_bin(Path::new(""))
                .join("wasm-opt")
                .display()
        );
    }
    Ok(())
}

/// Writes `<path>.gz` next to `path` (gzip format, Zopfli-compressed).
fn gzip_file(path: &Path) -> Result<()> {
    let bytes = fs::read(path).with_context(|| {
        format!(
            "wasm-pack did not produce {}; check the client's wasm-pack output above",
            path.display()
        )
    })?;
    let mut gz_path = path.as_os_str().to_owned();
    gz_path.push(".gz");
    let gz_path = PathBuf::from(gz_path);
    fs::write(&gz_path, gzip(&bytes)?)
        .with_context(|| format!("could not write {}", gz_path.display()))
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut packed = Vec::new();
    zopfli::compress(
        zopfli::Options::default(),
        zopfli::Format::Gzip,
        bytes,
        &mut packed,
    )
    .context("zopfli could not compress a client asset")?;
    Ok(packed)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use flate2::read::GzDecoder;

    use super::*;

    #[test]
    fn gzip_round_trips() {
        let text = b"maintenance ".repeat(100);
        let packed = gzip(&text).unwrap();
        assert!(packed.len() < text.len());
        let mut unpacked = Vec::new();
        GzDecoder::new(packed.as_slice())
            .read_to_end(&mut unpacked)
            .unwrap();
        assert_eq!(unpacked, text);
    }
}
