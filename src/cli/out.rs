//! Standard output for reports. A reader that goes away (`kar dump FILE | head`: EPIPE) ends the
//! output quietly, as Unix tools do, and the command still ends with its own exit code; any other
//! write error is kept and reported once the command has run (its report was not delivered).

use std::fmt;
use std::io::{ErrorKind, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

static GONE: AtomicBool = AtomicBool::new(false);
/// Standard output carries an archive (`kar backup --out -`): reports go to standard error.
static TO_STDERR: AtomicBool = AtomicBool::new(false);

/// From now on reports go to standard error: standard output carries an archive, and nothing
/// else may ever be written to it.
pub fn to_stderr() {
    TO_STDERR.store(true, Ordering::SeqCst);
}
static FAILED: Mutex<Option<String>> = Mutex::new(None);

/// `print!` for reports.
macro_rules! out {
    ($($t:tt)*) => { $crate::cli::out::write(format_args!($($t)*)) };
}

/// `println!` for reports.
macro_rules! outln {
    () => { $crate::cli::out::write(format_args!("\n")) };
    ($($t:tt)*) => { $crate::cli::out::write(format_args!("{}\n", format_args!($($t)*))) };
}

pub(crate) use {out, outln};

pub fn write(args: fmt::Arguments<'_>) {
    if TO_STDERR.load(Ordering::Relaxed) {
        let mut stderr = std::io::stderr().lock();
        let _ = stderr.write_fmt(args);
        return;
    }
    if GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        GONE.store(true, Ordering::Relaxed);
        if e.kind() != ErrorKind::BrokenPipe {
            let mut failed = FAILED.lock().unwrap_or_else(|p| p.into_inner());
            failed.get_or_insert_with(|| e.to_string());
        }
    }
}

/// A write error other than a reader gone away, if one happened.
pub fn failure() -> Option<String> {
    FAILED.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// A report table without borders: each column as wide as its widest cell, so a long topic or
/// subject name widens its column instead of pushing the rest of its row out of line. Columns
/// named in `right` (numbers) are right-aligned. Print it with [`print_table`].
pub fn table(header: &[&str], right: &[usize]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING)
        .set_header(header.to_vec());
    for (i, c) in t.column_iter_mut().enumerate() {
        c.set_padding((0, 2));
        if right.contains(&i) {
            c.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
    t
}

/// Prints a [`table`], with `indent` before each line and no trailing blanks.
pub fn print_table(t: &comfy_table::Table, indent: &str) {
    for line in t.lines() {
        write(format_args!("{indent}{}\n", line.trim_end()));
    }
}

/// Prints each of `items` on a line of its own after `label` (a report's list of problems,
/// gaps, dropped chunks...).
pub fn list<T: std::fmt::Display>(label: &str, items: &[T]) {
    for i in items {
        write(format_args!("{label} {i}\n"));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_long_name_widens_its_column_and_keeps_the_others_in_line() {
        let long = "a-topic-name-much-longer-than-any-fixed-width-column-would-allow";
        let mut t = super::table(&["topic", "records", "complete"], &[1]);
        t.add_row(vec!["t", "7", "yes"]);
        t.add_row(vec![long, "123456", "NO"]);
        let lines: Vec<String> = t.lines().map(|l| l.trim_end().to_string()).collect();
        assert_eq!(lines.len(), 3, "{lines:#?}");
        // The records column ends at one place (right-aligned), complete starts at one place.
        let ends: Vec<usize> = ["records", "7", "123456"]
            .iter()
            .zip(&lines)
            .map(|(cell, l)| l.find(&format!("{cell} ")).unwrap() + cell.len())
            .collect();
        assert!(ends.iter().all(|e| *e == ends[0]), "{lines:#?}");
        let starts: Vec<usize> = ["complete", "yes", "NO"]
            .iter()
            .zip(&lines)
            .map(|(cell, l)| l.rfind(cell).unwrap())
            .collect();
        assert!(starts.iter().all(|s| *s == starts[0]), "{lines:#?}");
        assert!(lines[2].starts_with(long), "{lines:#?}");
        assert!(ends[0] > long.len(), "{lines:#?}");
    }
}
