//! `kar cat`: arguments, their checks, the call and its exit code.

use std::io::Write;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::custody;
use crate::cat::{CatFormat, CatOptions};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    /// One JSON object a line (jq-friendly)
    Jsonl,
    /// One JSON array
    Json,
    /// Each value's bytes as stored, then a newline
    Raw,
}

#[derive(Debug, Args)]
pub struct CatArgs {
    /// The archive file
    pub file: PathBuf,
    #[command(flatten)]
    pub unlock: custody::UnlockArgs,
    /// Topics whose name this regular expression matches (anchored: the whole name)
    #[arg(long, value_name = "REGEX")]
    pub topic: Option<String>,
    /// Only this partition
    #[arg(long, value_name = "N")]
    pub partition: Option<i32>,
    /// Offsets: N, A..B (both included), A.. or ..B
    #[arg(long, value_name = "RANGE")]
    pub offset: Option<String>,
    /// Records with a timestamp at or after T (RFC 3339, a UTC date, or ms since the epoch)
    #[arg(long, value_name = "T")]
    pub from_time: Option<String>,
    /// Records with a timestamp before T
    #[arg(long, value_name = "T")]
    pub until_time: Option<String>,
    /// Records whose key holds S (in its bytes or its decoded JSON)
    #[arg(long, value_name = "S")]
    pub key_contains: Option<String>,
    /// Records whose key or value carries this schema ID
    #[arg(long, value_name = "ID")]
    pub schema_id: Option<u32>,
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: FormatArg,
    /// Stop after N records
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Print what was read (chunks, records, fields not decoded) as JSON on stderr at the end
    #[arg(long)]
    pub stats: bool,
}

/// `N`, `A..B`, `A..`, `..B`: offsets, both ends included.
pub fn parse_offsets(s: &str) -> anyhow::Result<RangeInclusive<i64>> {
    let num = |p: &str, open: i64| -> anyhow::Result<i64> {
        if p.is_empty() {
            return Ok(open);
        }
        p.trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("--offset {s:?}: {p:?} is not an offset"))
    };
    let r = match s.split_once("..") {
        None => {
            let n = num(s, 0)?;
            n..=n
        }
        Some((a, b)) => num(a, 0)?..=num(b, i64::MAX)?,
    };
    anyhow::ensure!(
        r.start() <= r.end(),
        "--offset {s:?}: the range is empty (its start is after its end)"
    );
    Ok(r)
}

/// A time: RFC 3339 (`2026-03-03T10:00:00Z`, an offset allowed), a date (`2026-03-03`, midnight
/// UTC), or milliseconds since the epoch.
pub fn parse_time(flag: &str, s: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    if let Ok(d) = s.parse::<jiff::civil::Date>() {
        let t =
            jiff::tz::TimeZone::UTC.to_timestamp(d.to_datetime(jiff::civil::Time::midnight()))?;
        return Ok(t.as_millisecond());
    }
    anyhow::bail!(
        "{flag} {s:?}: not a time (RFC 3339 such as 2026-03-03T10:00:00Z, a date such as 2026-03-03, or ms since the epoch)"
    )
}

fn options(a: &CatArgs) -> anyhow::Result<CatOptions> {
    anyhow::ensure!(
        a.file.as_os_str() != "-",
        "kar cat reads an archive file (its index chooses the chunks): keep a stream with `kar verify - --tee FILE`, then cat FILE"
    );
    let topics = a
        .topic
        .as_deref()
        .map(|t| regex::Regex::new(&format!("^(?:{t})$")))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--topic: {e}"))?;
    Ok(CatOptions {
        archive: a.file.clone(),
        unlock: Some(a.unlock.unlock()?),
        topics,
        partition: a.partition,
        offsets: a.offset.as_deref().map(parse_offsets).transpose()?,
        from_time: a
            .from_time
            .as_deref()
            .map(|t| parse_time("--from-time", t))
            .transpose()?,
        until_time: a
            .until_time
            .as_deref()
            .map(|t| parse_time("--until-time", t))
            .transpose()?,
        key_contains: a.key_contains.clone(),
        schema_id: a.schema_id,
        format: match a.format {
            FormatArg::Jsonl => CatFormat::JsonLines,
            FormatArg::Json => CatFormat::Json,
            FormatArg::Raw => CatFormat::Raw,
        },
        limit: a.limit,
    })
}

pub fn run(a: CatArgs) -> anyhow::Result<ExitCode> {
    let opts = options(&a)?;
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    let report = crate::cat::cat(&opts, &mut lock)?;
    if a.stats {
        let mut err = std::io::stderr().lock();
        serde_json::to_writer(&mut err, &report)?;
        writeln!(err)?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_times_parse_as_documented() {
        assert_eq!(parse_offsets("4711").unwrap(), 4711..=4711);
        assert_eq!(parse_offsets("10..20").unwrap(), 10..=20);
        assert_eq!(parse_offsets("10..").unwrap(), 10..=i64::MAX);
        assert_eq!(parse_offsets("..20").unwrap(), 0..=20);
        assert!(parse_offsets("20..10").is_err());
        assert!(parse_offsets("x").is_err());
        assert_eq!(parse_time("t", "1000").unwrap(), 1000);
        assert_eq!(parse_time("t", "1970-01-01T00:00:01Z").unwrap(), 1000);
        assert_eq!(parse_time("t", "1970-01-02").unwrap(), 86_400_000);
        assert_eq!(
            parse_time("t", "1970-01-01T01:00:00+01:00").unwrap(),
            0,
            "an offset is honoured"
        );
        assert!(parse_time("t", "3 March").is_err());
    }
}
