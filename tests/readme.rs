//! Every example the README shows, run as a reader would: its code blocks are read from
//! `README.md` itself (so an edit to the README is what is tested), the commands run with
//! the built `sluice` on `PATH`, in a folder laid out like the repository.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{self, sluice_bin};

/// A fenced block of the README: its language and its text.
struct Block {
    language: String,
    text: String,
}

fn readme_blocks() -> Vec<Block> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let mut blocks = Vec::new();
    // A block inside a list item is indented; its lines lose the fence's indent.
    let mut open: Option<(Block, usize)> = None;
    for line in readme.lines() {
        let indent = line.len() - line.trim_start().len();
        match (line.trim_start().strip_prefix("```"), open.take()) {
            (Some(language), None) => {
                let block = Block {
                    language: language.trim().to_owned(),
                    text: String::new(),
                };
                open = Some((block, indent));
            }
            (Some(_), Some((block, _))) => blocks.push(block),
            (None, Some((mut block, indent))) => {
                block
                    .text
                    .push_str(line.get(indent..).unwrap_or("").trim_end());
                block.text.push('\n');
                open = Some((block, indent));
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "README.md: a code block is never closed");
    blocks
}

/// The one block of `language` that holds `marker`.
fn block_with(language: &str, marker: &str) -> String {
    let found: Vec<_> = readme_blocks()
        .into_iter()
        .filter(|block| block.language == language && block.text.contains(marker))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "README.md: one ```{language} block with `{marker}`"
    );
    found
        .into_iter()
        .next()
        .map(|block| block.text)
        .unwrap_or_default()
}

/// A folder laid out like the repository (the examples name `jobs/examples/…`).
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("sluice-readme-")
        .tempdir()
        .unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/examples");
    std::fs::create_dir_all(dir.path().join("jobs/examples")).unwrap();
    for entry in std::fs::read_dir(&examples).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(
            entry.path(),
            dir.path().join("jobs/examples").join(entry.file_name()),
        )
        .unwrap();
    }
    dir
}

/// `bash` running a README block in `dir`, `sluice` on `PATH`; background processes the
/// block starts are stopped when it ends. A block that has not ended in five minutes (a
/// submit waiting for executors that could not start) is stopped and fails, so the
/// test reports it rather than hanging.
fn run_block(dir: &Path, block: &str) -> Output {
    wait_for_ports(block);
    let bin_dir = sluice_bin().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = format!(
        "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true; wait' EXIT\n{block}"
    );
    Command::new("timeout")
        .args(["300", "bash", "-c"])
        .arg(script)
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("SLUICE_SCHEDULER")
        .output()
        .unwrap()
}

/// Waits (up to a minute) until the fixed ports a block binds (`--port N`,
/// `--grpc-port N`) are free: they lie in the kernel's ephemeral range, where another
/// test's process may hold one for a moment.
fn wait_for_ports(block: &str) {
    let words: Vec<&str> = block.split_whitespace().collect();
    let ports: Vec<u16> = words
        .windows(2)
        .filter(|pair| matches!(pair[0], "--port" | "--grpc-port"))
        .filter_map(|pair| pair[1].parse().ok())
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !ports
        .iter()
        .all(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn shown(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Parquet files below a folder.
fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "parquet") {
                found.push(path);
            }
        }
    }
    found
}

/// The first command (`cargo run -- demo`, as the built binary) and then the small
/// cluster on one machine, as written: scheduler, two executors, a submit that waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_and_the_small_cluster_run_as_written() {
    let _serial = common::one_cluster_at_a_time().await;
    let dir = workspace();
    let commands = block_with("sh", "-- demo");
    let demo = commands
        .lines()
        .find(|line| line.starts_with("cargo run -- demo"))
        .expect("the demo command");
    let demo = demo.replacen("cargo run --", "sluice", 1);
    let output = run_block(dir.path(), &demo);
    assert!(output.status.success(), "{}", shown(&output));
    let monthly = dir.path().join("sluice-demo/curated/claims_monthly");
    assert!(
        !parquet_files(&monthly).is_empty(),
        "the demo wrote no aggregate in {}\n{}",
        monthly.display(),
        shown(&output)
    );

    let cluster = block_with("sh", "sluice scheduler --port 50050");
    let output = run_block(dir.path(), &cluster);
    assert!(output.status.success(), "{}", shown(&output));
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.contains("succeeded"), "{}", shown(&output));
    // The submitted job wrote its output where the block's params put it.
    let staging = cluster
        .split_whitespace()
        .find_map(|word| word.strip_prefix("staging="))
        .expect("the block's staging param");
    let claims = dir.path().join(staging).join("claims");
    assert!(claims.join("_SUCCESS").exists(), "{}", shown(&output));
    assert!(!parquet_files(&claims).is_empty(), "{}", shown(&output));

    // The secured cluster, as written: TLS, a fleet executor, a token of a submitter.
    let secured = block_with("sh", "--tls-client-ca");
    let output = run_block(dir.path(), &secured);
    assert!(output.status.success(), "{}", shown(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("succeeded"),
        "{}",
        shown(&output)
    );
    let claims = dir.path().join("sluice-demo/secure/claims");
    assert!(!parquet_files(&claims).is_empty(), "{}", shown(&output));
}

/// The job definition under "Job definitions" validates, with its params against the
/// demo's landing files (its columns exist, its expressions type).
#[test]
fn the_job_definition_example_validates_against_the_demo_data() {
    let dir = workspace();
    sluice_jobs::datagen::write_claims(&dir.path().join("lake"), 2_000, &[1], 7).unwrap();
    let definition = block_with("yaml", "apiVersion: sluice/v1");
    let file = dir.path().join("claims_cleanse.yaml");
    std::fs::write(&file, &definition).unwrap();
    let output = Command::new(sluice_bin())
        .arg("validate")
        .arg(&file)
        .args([
            "-p",
            &format!("landing={}", dir.path().join("lake/landing").display()),
        ])
        .args([
            "-p",
            &format!("staging={}", dir.path().join("staging").display()),
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", shown(&output));
}

/// The fragments (cleansing steps with their rules, a dirty landing source, a
/// fixed-width source) are valid parts of a definition: put into one with the sources
/// they name, each validates. (The steps and the rules are shown as one job's: its
/// `parse` step quarantines, into the rules' quarantine.)
#[test]
fn the_definition_fragments_are_valid_definitions() {
    const HEAD: &str = "apiVersion: sluice/v1\nname: fragment\nparams:\n  landing: {type: path, required: true}\n  staging: {type: path, required: true}\n  run_date: {type: date, required: true}\n  mask_key: {type: string, default: \"env:SLUICE_MASK_KEY\"}\n";
    const SOURCES: &str = "sources:\n  claims: {format: csv, path: \"{{landing}}/claims\"}\n  prescribers: {format: csv, path: \"{{landing}}/prescribers\"}\n  payer_aliases: {format: csv, path: \"{{landing}}/payer_aliases\"}\ninput: claims\n";
    const STEPS: &str = "steps:\n  - trim: []\n";
    const OUTPUTS: &str = "outputs:\n  - {name: claims, path: \"{{staging}}/claims\"}\n";
    let dir = workspace();
    let steps = block_with("yaml", "- standardize:");
    let quality = block_with("yaml", "row_key:");
    let fragments = [
        (
            "cleansing",
            format!("{HEAD}{SOURCES}{steps}{quality}{OUTPUTS}"),
        ),
        (
            "dirty landing",
            format!(
                "{HEAD}{}input: claims\n{STEPS}{OUTPUTS}",
                block_with("yaml", "mode: PERMISSIVE")
            ),
        ),
        (
            "fixed-width",
            format!(
                "{HEAD}{}{STEPS}{OUTPUTS}",
                block_with("yaml", "format: fixed_width")
            ),
        ),
    ];
    for (part, definition) in fragments {
        let file = dir.path().join(format!("{}.yaml", part.replace(' ', "_")));
        std::fs::write(&file, &definition).unwrap();
        let output = Command::new(sluice_bin())
            .arg("validate")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "the README's {part} fragment:\n{definition}\n{}",
            shown(&output)
        );
    }
}
