//! How many verification runs it takes to name the subtask that broke a
//! merged result: AIDA's bisection over the merge's prefixes, next to the
//! naive search that checks each prefix in turn. Each run is a full
//! `verify` command (minutes on a real project), so runs are what counts.
//!
//! `cargo bench -p aida-orchestrator --bench bisection` prints one table.
//! It counts runs, which do not vary, and times nothing: a plain `main`,
//! not criterion like the other in-process benches.

use aida_orchestrator::verification::simulate;

fn main() {
    println!(
        "{:>4}  {:>22}  {:>22}  {:>6}",
        "N", "bisection max / mean", "naive max / mean", "bound"
    );
    for n in [4usize, 16, 64, 256] {
        let (mut max, mut total) = (0u32, 0u32);
        for broken in 1..=n {
            let (culprit, runs) = simulate(n, broken);
            assert_eq!(culprit, broken, "the search named the wrong subtask");
            max = max.max(runs);
            total += runs;
        }
        // Naive: the whole result, then prefixes 1, 2, ... until one fails.
        let naive = |broken: usize| 1 + broken as u32;
        let naive_max = (1..=n).map(naive).max().unwrap_or_default();
        let naive_total: u32 = (1..=n).map(naive).sum();
        let bound = (n as f64).log2().ceil() as u32 + 1;
        assert!(max <= bound, "N={n}: {max} runs > {bound}");
        println!(
            "{n:>4}  {:>22}  {:>22}  {bound:>6}",
            format!("{max} / {:.1}", f64::from(total) / n as f64),
            format!("{naive_max} / {:.1}", f64::from(naive_total) / n as f64),
        );
    }
}
