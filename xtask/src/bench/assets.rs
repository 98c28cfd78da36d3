//! P6: the maintenance page's assets as HAProxy sends them from memory, against its buffer
//! (`tune.bufsize` in haproxy.cfg, `contract::HAPROXY_BUFSIZE`).

use std::fs;

use anyhow::{bail, Context, Result};
use driver::{Stack, HAPROXY_FILE_LIMIT, HAPROXY_FILE_WARNING as WARNING_BYTES};

use super::harness::{thousands, Bench, Figure, FigureId, Goal, Series, Unit};

/// One asset: its URL, the file HAProxy answers it from, and the raw file.
struct Asset {
    url: &'static str,
    served_file: &'static str,
    raw_file: &'static str,
}

const ASSETS: [Asset; 3] = [
    Asset {
        url: "/maintenance.html",
        served_file: "www/maintenance.html",
        raw_file: "www/maintenance.html",
    },
    Asset {
        url: "/pkg/client.js",
        served_file: "www/pkg/client.js.gz",
        raw_file: "www/pkg/client.js",
    },
    Asset {
        url: "/pkg/client_bg.wasm",
        served_file: "www/pkg/client_bg.wasm.gz",
        raw_file: "www/pkg/client_bg.wasm",
    },
];

fn size(path: &str) -> Result<u64> {
    Ok(fs::metadata(path)
        .with_context(|| format!("could not read {path}; run `cargo xtask build-client`"))?
        .len())
}

fn gzip_size(path: &str) -> Result<u64> {
    let bytes = fs::read(path).with_context(|| format!("could not read {path}"))?;
    let mut packed = Vec::new();
    zopfli::compress(
        zopfli::Options::default(),
        zopfli::Format::Gzip,
        bytes.as_slice(),
        &mut packed,
    )
    .with_context(|| format!("could not compress {path}"))?;
    Ok(packed.len() as u64)
}

/// Measures P6.
pub fn measure(bench: &Bench) -> Result<Figure> {
    let stack = Stack::builder().build_id("bench").start();
    let mut largest = Vec::new();
    let mut sent = vec![0_u64; ASSETS.len()];
    for run in 1..=bench.runs {
        bench.check_interrupt()?;
        for (i, asset) in ASSETS.iter().enumerate() {
            // What a browser asks for: gzip accepted.
            let answer = stack.send(stack.request(asset.url).header("Accept-Encoding", "gzip"));
            let expected = fs::read(asset.served_file)
                .with_context(|| format!("could not read {}", asset.served_file))?;
            if answer.status != 200 || answer.body != expected {
                bail!(
                    "GET {} did not answer {} from HAProxy's memory: {}",
                    asset.url,
                    asset.served_file,
                    answer.summary()
                );
            }
            sent[i] = answer.body.len() as u64;
        }
        let max = sent.iter().copied().max().unwrap_or(0);
        bench.progress(
            FigureId::P6,
            run,
            "as sent",
            &format!("largest body {} B", thousands(max as f64)),
        );
        largest.push(max as f64);
    }
    super::harness::stop_stack(stack);

    let mut findings = vec![
        format!(
            "| asset | raw file | gzip | HAProxy sends | share of the {} B buffer |",
            thousands(HAPROXY_FILE_LIMIT as f64)
        ),
        "|---|---|---|---|---|".to_owned(),
    ];
    let mut over_warning = Vec::new();
    for (asset, sent) in ASSETS.iter().zip(&sent) {
        let raw = size(asset.raw_file)?;
        let gzip = if asset.served_file.ends_with(".gz") {
            size(asset.served_file)?
        } else {
            gzip_size(asset.raw_file)?
        };
        let form = if asset.served_file.ends_with(".gz") {
            "gzip"
        } else {
            "raw"
        };
        findings.push(format!(
            "| `{}` | {} B | {} B | {} B ({form}) | {:.0} % |",
            asset.url,
            thousands(raw as f64),
            thousands(gzip as f64),
            thousands(*sent as f64),
            *sent as f64 * 100.0 / HAPROXY_FILE_LIMIT as f64
        ));
        if *sent > WARNING_BYTES {
            over_warning.push(asset.url);
        }
    }
    findings.push(String::new());
    findings.push(if over_warning.is_empty() {
        format!(
            "every asset is also under HAProxy's {} B warning threshold (buffer minus \
             tune.maxrewrite)",
            thousands(WARNING_BYTES as f64)
        )
    } else {
        format!(
            "over HAProxy's {} B warning threshold: {}",
            thousands(WARNING_BYTES as f64),
            over_warning.join(", ")
        )
    });
    let ours = Series::new("largest asset", largest, Unit::Bytes);
    let comparator = Series::new(
        "HAProxy buffer",
        vec![HAPROXY_FILE_LIMIT as f64; bench.runs],
        Unit::Bytes,
    );
    let met = ours
        .summary()
        .is_some_and(|s| s.max <= HAPROXY_FILE_LIMIT as f64);
    Ok(Figure {
        id: FigureId::P6,
        goal: Goal {
            text: format!("every asset ≤ {} B", thousands(HAPROXY_FILE_LIMIT as f64)),
            met,
        },
        findings,
        method: "After `cargo xtask build-client`, a stack from the end-to-end harness is \
                 started on the built www/, and each asset the maintenance page needs while \
                 every origin may be dead is fetched through HAProxy the way a browser asks \
                 (`Accept-Encoding: gzip`): the page itself (sent raw) and the client's JS glue \
                 and Wasm module (sent as the pre-compressed .gz files, Zopfli). The figure is \
                 the largest body as sent, checked byte for byte against the file HAProxy \
                 serves; the gzip column of the page is what Zopfli makes of it, for \
                 reference. Comparator: `tune.bufsize` as haproxy.cfg sets it, the most a \
                 `http-request return ... file` can send (a larger file stops HAProxy from \
                 starting). Sizes do not vary between runs; the runs only repeat the fetch."
            .to_owned(),
        ours,
        comparator,
    })
}
