//! `docs/benchmarks-kernels.md`: the datapath benchmark's ratios, one block of rows per
//! kernel, kept up to date by `cargo xtask bench --kernel K`.
//!
//! A file of its own because `docs/benchmarks.md` is rewritten whole by the full benchmark
//! run on the host. Each run replaces only its kernel's rows, so the table grows into the
//! matrix one kernel at a time. Only ratios: under qemu's software emulation absolute
//! latencies and rates mean nothing, fast path / kernel path still shows whether the fast
//! path engages.

use std::path::PathBuf;

use crate::process::{workspace_root, Result};

/// The ratio table's header in the benchmark's output (tests/src/bench/datapath.rs).
const RATIO_HEADER: &str = "| host | traffic | latency fast/direct |";

fn path() -> PathBuf {
    workspace_root().join("docs/benchmarks-kernels.md")
}

/// The header and data rows of the ratio table in `log` (the benchmark's stdout).
pub fn ratio_table(log: &str) -> Option<(String, Vec<String>)> {
    let mut lines = log.lines().skip_while(|l| !l.starts_with(RATIO_HEADER));
    let header = lines.next()?.to_string();
    // The |---| line.
    lines.next();
    let rows: Vec<String> = lines.take_while(|l| l.starts_with('|')).map(str::to_string).collect();
    (!rows.is_empty()).then_some((header, rows))
}

/// Replace the rows of `release` in the table with `rows` (under the benchmark's `header`),
/// prefixed with the kernel and its attach mode.
pub fn record(release: &str, attach: &str, header: &str, rows: &[String]) -> Result<PathBuf> {
    let old = std::fs::read_to_string(path()).unwrap_or_default();
    let text = merge(&old, release, attach, header, rows);
    std::fs::write(path(), text)?;
    Ok(path())
}

/// Cells of a table row.
fn cells(row: &str) -> usize {
    row.matches('|').count().saturating_sub(1)
}

fn merge(old: &str, release: &str, attach: &str, header: &str, rows: &[String]) -> String {
    let mine = format!("| {release} |");
    let header = format!("| kernel | attach {header}");
    // Rows of another kernel stay, unless an earlier benchmark with other columns wrote them.
    let mut kept: Vec<String> = old
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| kernel |") && !l.starts_with(&mine) && cells(l) == cells(&header))
        .map(str::to_string)
        .collect();
    kept.extend(rows.iter().map(|r| format!("| {release} | {attach} {r}")));
    kept.sort_by_key(|row| kernel_of(row));
    let mut s = String::from(
        "# Datapath benchmark per kernel\n\n\
         Written by `cargo xtask bench --kernel <K>` (the datapath section of `cargo xtask bench`,\n\
         run in a qemu guest on that kernel; `host` runs it on the machine's own). Under software\n\
         emulation absolute numbers mean nothing, so only the ratios are kept: a fast path that\n\
         engages shows in `tps fast/kernel path` above 1, most on the loaded host. Each run\n\
         replaces its kernel's rows. Each cell is a ratio of medians over the run's rounds with the\n\
         min-max of the per-round ratios; under emulation they move by tens of percent between runs\n\
         (the direct pair most), so read them as engaged or not, not as a speed-up.\n\n",
    );
    s += &header;
    s.push('\n');
    // Kernel, attach, host and traffic are text; the ratios align right.
    s += &(0..cells(&header)).map(|i| if i < 4 { "|---" } else { "|---:" }).collect::<String>();
    s += "|\n";
    for row in kept {
        s += &row;
        s.push('\n');
    }
    s
}

/// Numeric version order of the kernel cell, so 6.12 sorts after 6.1.
fn kernel_of(row: &str) -> Vec<u32> {
    let cell = row.trim_start_matches("| ").split(" |").next().unwrap_or_default();
    cell.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(|s| s.parse().unwrap_or(0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "Targets: ...\n\n| host | traffic | latency fast/direct | Gbit/s fast/direct | tps fast/kernel path |\n|---|---|---:|---:|---:|\n| idle | pod<->pod, one VM | 0.638 | 0.912 | 1.12 |\n| loaded | pod<->pod, one VM | 0.648 | 0.984 | 3.20 |\n6.1.0 ok\n";

    #[test]
    fn rows_are_read_and_replaced_per_kernel() {
        let (header, rows) = ratio_table(LOG).unwrap();
        assert_eq!(rows.len(), 2);
        let once = merge("", "6.12.117+deb12-amd64", "TCX", &header, &rows);
        let twice = merge(&once, "6.1.0-57-amd64", "clsact", &header, &rows);
        let again = merge(&twice, "6.1.0-57-amd64", "clsact", &header, &rows[..1]);
        let data: Vec<&str> = again.lines().filter(|l| l.starts_with("| 6.")).collect();
        assert_eq!(data.len(), 3);
        assert!(data[0].starts_with("| 6.1.0-57-amd64 | clsact | idle |"));
        assert!(data[1].starts_with("| 6.12.117+deb12-amd64 | TCX | idle |"));
        assert!(again.contains("| kernel | attach | host | traffic | latency fast/direct | Gbit/s fast/direct | tps fast/kernel path |\n|---|---|---|---|---:|---:|---:|\n"), "{again}");
    }

    #[test]
    fn rows_of_other_columns_are_dropped() {
        let (header, rows) = ratio_table(LOG).unwrap();
        let old = "| kernel | attach | host | traffic | latency fast/direct |\n|---|---|---|---|---:|\n| 6.1.0-57-amd64 | clsact | idle | pod | 1.0 |\n";
        let merged = merge(old, "6.12.117+deb12-amd64", "TCX", &header, &rows);
        assert!(!merged.contains("6.1.0-57"), "{merged}");
        assert_eq!(merged.lines().filter(|l| l.starts_with("| 6.12")).count(), 2);
    }
}
