//! The metrics as a file for node_exporter's textfile collector (`--collector.textfile.directory`):
//! Prometheus' text format 0.0.4, written whole to a temporary file beside it and renamed over
//! it, so that the collector never reads half a file. The way an air-gapped host without a scrape
//! path into kar reports.

use std::io::Write;
use std::path::{Path, PathBuf};

/// OpenMetrics text (as `prometheus-client` writes it) in the text format 0.0.4: a counter's
/// family takes its samples' `_total` name (OpenMetrics names the family without it, which a
/// 0.0.4 parser reads as another metric with no samples), and the `# UNIT` and `# EOF` lines,
/// which 0.0.4 does not have, go.
pub fn to_text_format(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Writes `text` to `path` atomically: a temporary file in the same directory (a name the
/// collector ignores: it reads `*.prom` only), synced, then renamed over `path`.
pub fn write(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = temporary(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// What an earlier run's textfile tells of the job's last success and failure.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Earlier {
    pub last_success: Option<f64>,
    pub last_success_duration: Option<f64>,
    pub last_failure: Option<f64>,
}

impl Earlier {
    /// Reads the textfile at `path`, if there is one, for the run of `command` and `job`; a
    /// missing or unreadable file, or a line that is not a sample of theirs, tells nothing (the
    /// file is ours to overwrite).
    pub fn read(path: &Path, command: &str, job: Option<&str>) -> Earlier {
        std::fs::read_to_string(path)
            .map(|t| Earlier::parse(&t, command, job))
            .unwrap_or_default()
    }

    /// The samples of `command` and `job` in `text`: their label sets exactly as
    /// [`super::Metrics`] writes them, values escaped as the text formats escape them.
    pub fn parse(text: &str, command: &str, job: Option<&str>) -> Earlier {
        let labels = match job {
            Some(j) => format!(
                r#"{{command="{}",kar_job="{}"}} "#,
                escape(command),
                escape(j)
            ),
            None => format!(r#"{{command="{}"}} "#, escape(command)),
        };
        let mut e = Earlier::default();
        for line in text.lines() {
            let Some((name, value)) = line.split_once(&labels) else {
                continue;
            };
            let value = value.parse::<f64>().ok().filter(|v| v.is_finite());
            let slot = match name {
                "kar_last_success_timestamp_seconds" => &mut e.last_success,
                "kar_last_success_duration_seconds" => &mut e.last_success_duration,
                "kar_last_failure_timestamp_seconds" => &mut e.last_failure,
                _ => continue,
            };
            *slot = value.or(*slot);
        }
        e
    }
}

/// A label value as the text formats write it: backslash, double quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_take_their_total_name_and_openmetrics_lines_go() {
        let om = "# HELP kar_records_read Records read.\n\
                  # TYPE kar_records_read counter\n\
                  kar_records_read_total{topic=\"t\",partition=\"0\"} 3\n\
                  # HELP kar_fsync_seconds Time.\n\
                  # TYPE kar_fsync_seconds histogram\n\
                  # UNIT kar_fsync_seconds seconds\n\
                  kar_fsync_seconds_sum 0.5\n\
                  kar_fsync_seconds_count 1\n\
                  kar_fsync_seconds_bucket{le=\"+Inf\"} 1\n\
                  # HELP kar_registry_retry_wait_seconds Time waited.\n\
                  # TYPE kar_registry_retry_wait_seconds counter\n\
                  # UNIT kar_registry_retry_wait_seconds seconds\n\
                  kar_registry_retry_wait_seconds_total 1.5\n\
                  # EOF\n";
        assert_eq!(
            to_text_format(om),
            "# HELP kar_records_read_total Records read.\n\
             # TYPE kar_records_read_total counter\n\
             kar_records_read_total{topic=\"t\",partition=\"0\"} 3\n\
             # HELP kar_fsync_seconds Time.\n\
             # TYPE kar_fsync_seconds histogram\n\
             kar_fsync_seconds_sum 0.5\n\
             kar_fsync_seconds_count 1\n\
             kar_fsync_seconds_bucket{le=\"+Inf\"} 1\n\
             # HELP kar_registry_retry_wait_seconds_total Time waited.\n\
             # TYPE kar_registry_retry_wait_seconds_total counter\n\
             kar_registry_retry_wait_seconds_total 1.5\n"
        );
    }

    #[test]
    fn an_earlier_file_tells_the_last_success_and_failure_of_its_job() {
        let t = r#"# TYPE kar_last_success_timestamp_seconds gauge
kar_last_success_timestamp_seconds{command="backup",kar_job="nightly \"x\""} 1764800000.5
kar_last_success_timestamp_seconds{command="backup",kar_job="other"} 1.0
kar_last_success_timestamp_seconds{command="restore"} 2.0
kar_last_success_duration_seconds{command="backup",kar_job="nightly \"x\""} 12.25
kar_run_exit_code{command="backup",kar_job="nightly \"x\""} 0
kar_last_failure_timestamp_seconds{command="backup",kar_job="nightly \"x\""} garbage
"#;
        assert_eq!(
            Earlier::parse(t, "backup", Some("nightly \"x\"")),
            Earlier {
                last_success: Some(1764800000.5),
                last_success_duration: Some(12.25),
                last_failure: None,
            }
        );
        assert_eq!(Earlier::parse(t, "restore", None).last_success, Some(2.0));
        assert_eq!(Earlier::parse(t, "backup", None), Earlier::default());
        assert_eq!(Earlier::parse("", "backup", None), Earlier::default());
    }

    #[test]
    fn the_file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kar.prom");
        write(&p, "a 1\n").unwrap();
        write(&p, "b 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "b 2\n");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
    }
}
