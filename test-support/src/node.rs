//! A Node.js for the tests that run JavaScript: the js-libp2p interop peers and the TypeScript
//! package in `js/`.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Mutex, OnceLock},
};

/// The `node` (major version `major` or newer) to run the package in `package_dir` with, its
/// packages installed (`npm ci` if `node_modules` is missing). In order: the directory in
/// `MPLEX_HALFCLOSE_NODE<major>` (which `.ci/run` sets), the machine's `node` if new enough,
/// else `.ci/node <major> <dir>`, which fetches a pinned Node.js from the npm registry and
/// installs the packages. Fails loudly if none works: a test that needs Node must not pass by
/// skipping.
pub fn node(major: u32, package_dir: &Path) -> PathBuf {
    static NODES: OnceLock<Mutex<HashMap<(u32, PathBuf), PathBuf>>> = OnceLock::new();
    let key = (major, package_dir.to_path_buf());
    let mut nodes = NODES.get_or_init(Mutex::default).lock().unwrap();
    if let Some(node) = nodes.get(&key) {
        return node.clone();
    }
    let from_env = std::env::var_os(format!("MPLEX_HALFCLOSE_NODE{major}"))
        .map(|dir| PathBuf::from(dir).join("node"));
    let node = match from_env {
        Some(node) => node,
        None if node_version(Path::new("node")).is_some_and(|v| v >= major) => {
            PathBuf::from("node")
        }
        None => {
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.ci/node");
            let output = Command::new(&script)
                .args([
                    &major.to_string(),
                    package_dir.to_str().expect("a UTF-8 path"),
                ])
                .stderr(Stdio::inherit())
                .output()
                .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
            assert!(
                output.status.success(),
                "\n\n*** This test needs Node.js {major}+; `node` is older or missing, and \
                 `.ci/node {major}` could not fetch it (output above). ***\n"
            );
            match String::from_utf8_lossy(&output.stdout).trim() {
                "" => PathBuf::from("node"),
                dir => PathBuf::from(dir).join("node"),
            }
        }
    };
    let version = node_version(&node);
    assert!(
        version.is_some_and(|v| v >= major),
        "{} needs Node.js {major}+, {} is {version:?}",
        package_dir.display(),
        node.display()
    );
    if !package_dir.join("node_modules").exists() {
        // npm from the same Node.js.
        let npm = node.with_file_name("npm");
        let npm = if npm.exists() {
            npm
        } else {
            PathBuf::from("npm")
        };
        let mut path = std::env::var_os("PATH").unwrap_or_default();
        if let Some(dir) = node.parent().filter(|d| !d.as_os_str().is_empty()) {
            path = std::env::join_paths(
                std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&path)),
            )
            .expect("PATH");
        }
        let status = Command::new(npm)
            .args(["ci", "--no-audit", "--no-fund"])
            .env("PATH", path)
            .current_dir(package_dir)
            .status()
            .expect("run npm ci");
        assert!(
            status.success(),
            "npm ci in {} failed",
            package_dir.display()
        );
    }
    nodes.insert(key, node.clone());
    node
}

/// The major version of the Node.js at `node`, if it runs.
pub fn node_version(node: &Path) -> Option<u32> {
    let output = Command::new(node).arg("--version").output().ok()?;
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// The TypeScript package in `js/`, its packages installed and built with `tsc` (once per test
/// process). Returns its directory.
pub fn built_js_package() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../js");
            let node = node(22, &dir);
            let status = Command::new(&node)
                .args(["node_modules/typescript/bin/tsc", "-p", "."])
                .current_dir(&dir)
                .status()
                .expect("run tsc");
            assert!(
                status.success(),
                "tsc failed in {} (output above)",
                dir.display()
            );
            dir
        })
        .clone()
}
