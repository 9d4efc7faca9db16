//! What the lab prints, in the format asked (`--format text|json`, as
//! `firstcome`'s). In text, the progress and the summary are for people, on
//! stdout. In JSON, stdout carries one document, the command's result (the
//! report also written to disk), and the progress goes to stderr, so
//! `firstcome-lab … --format json | jq` reads the result alone while a
//! person still sees the run go by.

use std::sync::atomic::{AtomicBool, Ordering};

pub use firstcome_cli::output::{Format, Output};

/// Set once, by the command line, before any command runs.
static PROGRESS_ON_STDERR: AtomicBool = AtomicBool::new(false);

/// Where [`say!`](crate::say) writes from now on.
pub fn set_format(format: Format) {
    PROGRESS_ON_STDERR.store(format == Format::Json, Ordering::Relaxed);
}

/// Whether progress goes to stderr (a JSON document owns stdout).
pub fn progress_on_stderr() -> bool {
    PROGRESS_ON_STDERR.load(Ordering::Relaxed)
}

/// `println!` for the lab's progress and summaries: stdout in text, stderr
/// when stdout carries a JSON document.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        if $crate::output::progress_on_stderr() {
            eprintln!($($arg)*)
        } else {
            println!($($arg)*)
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_moves_the_progress_to_stderr_and_text_keeps_it_on_stdout() {
        set_format(Format::Json);
        assert!(progress_on_stderr());
        set_format(Format::Text);
        assert!(!progress_on_stderr());
    }
}
