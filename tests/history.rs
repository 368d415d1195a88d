//! `llama-runner history`: records of several commits in snapshot order, table and plot; and
//! `llama-runner snapshots`, the one reader of the snapshot list the scripts use.

use std::path::{Path, PathBuf};
use std::process::Command;

fn exe() -> Command {
    Command::new(env!("CARGO_BIN_EXE_llama-runner"))
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn history_orders_commits_by_snapshot_date_and_plots_them() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("history-test");
    let _ = std::fs::remove_dir_all(&dir);
    let records = dir.join("records");
    std::fs::create_dir_all(&records).unwrap();
    let newest = records.join("newest.json");
    let out = exe()
        .current_dir(workspace())
        .env("LLAMA_MODELS_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-tests-models"))
        .args(["bench", "--config", "configs/cpu-tiny.toml", "--repetitions", "2", "--record"])
        .arg(&newest)
        .output()
        .unwrap();
    assert!(out.status.success(), "bench failed: {}", String::from_utf8_lossy(&out.stderr));

    // The same record claiming to come from two older snapshots (written first, listed in
    // reverse), and an unknown commit, which goes last.
    let text = std::fs::read_to_string(&newest).unwrap();
    let commit = llama_runner::build_info::COMMIT;
    let older = [
        ("a.json", "1051ecd28907d2ca0a15c135f190fe415d0a3d1b"),
        ("b.json", "9515c6131aecaccc955fdedcfe16c3e030aaefcb"),
        ("c.json", "0123456789abcdef0123456789abcdef01234567"),
    ];
    for (name, c) in older {
        std::fs::write(records.join(name), text.replace(commit, c)).unwrap();
    }
    let snapshots = workspace().join("scripts/llama-cpp-snapshots.tsv");
    let (md, svg) = (dir.join("history.md"), dir.join("history.svg"));
    let out = exe()
        .arg("history")
        .arg(&records)
        .arg("--snapshots")
        .arg(&snapshots)
        .arg("--md")
        .arg(&md)
        .arg("--svg")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(out.status.success(), "history failed: {}", String::from_utf8_lossy(&out.stderr));

    let table = std::fs::read_to_string(&md).unwrap();
    let order: Vec<&str> = table
        .lines()
        .skip_while(|l| !l.starts_with("### tiny "))
        .skip(4) // the heading, a blank line, the header row and the separator
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.split('|').nth(1).unwrap().trim())
        .collect();
    // The pinned commit is the newest snapshot; the unknown commit has no date and goes last.
    assert_eq!(order, ["9515c613", "1051ecd2", &commit[..8], "01234567"], "{table}");
    assert!(table.contains("| 9515c613 | 2025-08-15 |"), "{table}");
    assert!(table.contains("### tiny-turns"), "{table}");

    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.trim_end().ends_with("</svg>"));
    for label in ["9515c613", "2025-08-15", "1051ecd2", "prompt processing", "generation", "tiny-turns"] {
        assert!(plot.contains(label), "the plot lacks {label}");
    }
    // Two panels × two workloads × four commits, one marker each.
    assert_eq!(plot.matches("<circle cx=").count(), 2 * 2 * 4 + 2, "markers (and two in the legend)");

    // A workload no record has is an error that names it.
    let out = exe().arg("history").arg(&records).args(["--workload", "nope"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}

#[test]
fn snapshots_lists_and_resolves_the_snapshot_list() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_llama-runner"))
            .current_dir(workspace())
            .arg("snapshots")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let list = llama_workbench::history::read_snapshots(&workspace().join("scripts/llama-cpp-snapshots.tsv")).unwrap();
    let (code, stdout, _) = run(&["list"]);
    assert_eq!(code, Some(0));
    assert_eq!(stdout.lines().collect::<Vec<_>>(), list.iter().map(|s| s.commit.as_str()).collect::<Vec<_>>());
    let (_, long, _) = run(&["list", "--long"]);
    assert_eq!(long.lines().next().unwrap().split('\t').count(), 4, "{long}");
    let first = &list[0];
    let (code, date, _) = run(&["show", &first.commit[..8], "--field", "date"]);
    assert_eq!((code, date.trim()), (Some(0), first.date.as_str()));
    let (code, row, _) = run(&["show", &first.commit]);
    assert_eq!(
        (code, row.trim().to_string()),
        (Some(0), format!("{}\t{}\t{}", first.commit, first.date, first.source))
    );
    let (code, _, stderr) = run(&["show", "zzzz"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("no snapshot commit starts with `zzzz`"), "{stderr}");
}
