//! Runs the C edge-case test (`tests/c/edge_cases.c`) against the
//! `libstrata.so` that Cargo built for this test run, under `LD_PRELOAD`.
//! `ci/capi.sh` runs it against the release build, plus real programs.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn c_edge_cases_under_ld_preload() {
    // Cargo builds the cdylib next to this test binary (target/<profile>/
    // deps/) and, for `cargo build`, copies it one level up.
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let lib = [deps, deps.parent().unwrap()]
        .iter()
        .map(|dir| dir.join("libstrata.so"))
        .find(|lib| lib.exists())
        .expect("libstrata.so not built");

    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/c/edge_cases.c");
    let bin = std::env::temp_dir().join(format!("strata-edge-cases-{}", std::process::id()));
    let cc = Command::new("cc")
        .args(["-O1", "-g", "-fno-builtin", "-pthread", "-o"])
        .arg(&bin)
        .arg(&src)
        .arg("-ldl")
        .status();
    match cc {
        Ok(status) => assert!(status.success(), "cc failed"),
        Err(e) => {
            eprintln!("skipped: no C compiler ({e})");
            return;
        }
    }
    let out = Command::new(&bin).env("LD_PRELOAD", &lib).output().unwrap();
    let _ = std::fs::remove_file(&bin);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "edge_cases failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
