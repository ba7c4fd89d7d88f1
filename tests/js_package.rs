//! The TypeScript package in `js/` (the extension for js-libp2p): its own tests and js-libp2p's
//! stream-muxer compliance suite, a check that the muxer type-checks without Node's types, and
//! the package bundled for the browser and run in headless Chromium, with Node.js 22 (see `test_support::node`), so that the
//! README's test command covers it.

use std::{path::PathBuf, process::Command};

fn run(node: &PathBuf, dir: &PathBuf, what: &str, args: &[&str]) {
    let status = Command::new(node)
        .args(args)
        .current_dir(dir)
        .status()
        .unwrap_or_else(|e| panic!("run {what}: {e}"));
    assert!(
        status.success(),
        "{what} failed in {} (output above)",
        dir.display()
    );
}

#[test]
fn the_typescript_package_builds_and_passes_its_tests_and_the_compliance_suite() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js");
    let node = test_support::node::node(22, &dir);
    // The muxer itself uses no Node-only API: it type-checks with the DOM's types and without
    // Node's, as a browser bundle would.
    run(
        &node,
        &dir,
        "the browser type check",
        &[
            "node_modules/typescript/bin/tsc",
            "-p",
            "tsconfig.browser.json",
        ],
    );
    run(
        &node,
        &dir,
        "tsc",
        &["node_modules/typescript/bin/tsc", "-p", "."],
    );
    run(
        &node,
        &dir,
        "the package's tests",
        &["--expose-gc", "--test", "dist/test/**/*.test.js"],
    );
    // In a real browser: headless Chromium (`CHROMIUM`, default /usr/bin/chromium, which
    // `.ci/run` installs from Debian's packages).
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "\n\n*** The browser test needs Chromium at {chromium} (set CHROMIUM, or run .ci/run, \
         which installs Debian's chromium). ***\n"
    );
    run(
        &node,
        &dir,
        "the browser test (headless Chromium)",
        &["dist/test/browser/run.js"],
    );
    run(
        &node,
        &dir,
        "js-libp2p's stream-muxer compliance suite",
        &[
            "node_modules/mocha/bin/mocha.js",
            "--timeout",
            "60000",
            "dist/test/compliance.spec.js",
        ],
    );
}
