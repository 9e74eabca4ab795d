//! Embeds the web console (`console/dist`, bundled by `ops/console-build`) into the API binary:
//! generates `$OUT_DIR/console_assets.rs`, a table of every file with its content type, its
//! bytes (`include_bytes!`) and a gzip copy for the compressible ones (compressed here, once).
//!
//! When node and npm are on the PATH, this runs `ops/console-build` first (idempotent: it does
//! nothing when the bundle is current), so `cargo build` alone yields a binary with the current
//! console. Without them a built `console/dist` is used as it is; with neither, the binary
//! serves a page that says the console was not built, and the build prints a warning — the
//! API itself does not need the console. `SSHQ_CONSOLE_BUILD=0` skips running the script
//! (an offline build from a committed or copied `console/dist`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest
        .parent()
        .expect("api/ sits in the workspace")
        .to_path_buf();
    let console = root.join("console");
    let dist = console.join("dist");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets it"));

    for watched in [
        "console/src",
        "console/package.json",
        "console/package-lock.json",
        "console/build.mjs",
        "console/dist",
        "ops/console-build",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    println!("cargo:rerun-if-env-changed=SSHQ_CONSOLE_BUILD");

    let skip = env::var("SSHQ_CONSOLE_BUILD").is_ok_and(|v| v == "0");
    if !skip && console.join("package.json").is_file() && node_available() {
        let status = Command::new("bash")
            .arg(root.join("ops/console-build"))
            .status()
            .expect("bash runs ops/console-build");
        assert!(
            status.success(),
            "ops/console-build failed ({status}): the web console could not be bundled; see \
             its output above, or build with SSHQ_CONSOLE_BUILD=0 to embed console/dist as it is"
        );
    }

    let mut files = Vec::new();
    if dist.join("index.html").is_file() {
        collect(&dist, &dist, &mut files);
    } else {
        println!(
            "cargo:warning=console/dist was not built (node/npm missing?): /console will say so; \
             run ops/console-build and rebuild to embed the web console"
        );
        let page = out.join("console-missing.html");
        fs::write(&page, MISSING).expect("OUT_DIR is writable");
        files.push(("index.html".to_owned(), page));
    }
    files.sort();

    let mut table = String::from("&[\n");
    for (index, (name, path)) in files.iter().enumerate() {
        let bytes = fs::read(path).expect("console asset readable");
        let kind = content_type(name);
        let gzip = if compressible(kind) && bytes.len() > 1024 {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            encoder.write_all(&bytes).expect("in memory");
            let packed = encoder.finish().expect("in memory");
            let gz = out.join(format!("console-{index}.gz"));
            fs::write(&gz, packed).expect("OUT_DIR is writable");
            format!("Some(include_bytes!({:?}))", gz.display().to_string())
        } else {
            "None".to_owned()
        };
        table.push_str(&format!(
            "    Asset {{ path: {name:?}, content_type: {kind:?}, body: include_bytes!({:?}), gzip: {gzip} }},\n",
            path.display().to_string()
        ));
    }
    table.push(']');
    fs::write(out.join("console_assets.rs"), table).expect("OUT_DIR is writable");
}

fn node_available() -> bool {
    ["node", "npm"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Every file under `dir` (but the build stamp), by its path relative to `base` with `/`.
fn collect(base: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    for entry in fs::read_dir(dir).expect("console/dist readable") {
        let path = entry.expect("console/dist readable").path();
        if path.is_dir() {
            collect(base, &path, files);
        } else if path.file_name().is_some_and(|n| n != ".stamp") {
            let relative = path.strip_prefix(base).expect("under base");
            let name = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            files.push((name, path));
        }
    }
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

fn compressible(content_type: &str) -> bool {
    content_type.starts_with("text/")
        || content_type.starts_with("application/json")
        || content_type == "image/svg+xml"
        || content_type == "application/wasm"
}

const MISSING: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>sshq console not built</title></head><body><h1>The sshq web console was not built</h1>\
<p>This API binary was built without <code>console/dist</code>. Run <code>ops/console-build</code> \
(needs node and npm) and rebuild the API to embed it.</p></body></html>\n";
