//! Diagnostics on stderr: text for a person, or JSON for a log collector (one event a line, each
//! with the command and the job it belongs to, whichever thread emitted it), filtered by
//! `KAR_LOG` (tracing's `EnvFilter` syntax).

use std::fmt;
use std::sync::OnceLock;

use clap::ValueEnum;

use crate::progress::{Event as ProgressEvent, Progress, ProgressSink};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// Lines for a person
    #[default]
    Text,
    /// One JSON object a line (tracing's JSON format), with "command" and "job"
    Json,
}

/// Tracing's JSON event format, with the command and job added to every event: a span would
/// not reach the worker threads a backup or restore runs on.
struct Tagged {
    inner: Format<Json>,
    tags: String,
}

impl<S, N> FormatEvent<S, N> for Tagged
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{{}{rest}", self.tags),
            None => writer.write_str(&line),
        }
    }
}

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

fn json() -> bool {
    FORMAT.get() == Some(&LogFormat::Json)
}

/// A warning for the operator: a `kar: warning:` line, or a JSON event.
pub fn warning(msg: &str) {
    if json() {
        tracing::warn!(target: "kar", "{msg}");
    } else {
        eprintln!("kar: warning: {msg}");
    }
}

/// The error that ends the command: a `kar: error:` line, or a JSON event.
pub fn error(msg: &str) {
    if json() {
        tracing::error!(target: "kar", "{msg}");
    } else {
        eprintln!("kar: error: {msg}");
    }
}

/// Installs the subscriber for the process. By default kar's warnings only as text (librdkafka
/// reports routine events, a partition's end, a reconnect, as errors; what matters of them
/// reaches kar's own messages); as JSON kar's informational events too, the summary among them.
pub fn init(format: LogFormat, command: &str, job: Option<&str>) {
    let _ = FORMAT.set(format);
    let default = match format {
        LogFormat::Text => "warn,rdkafka=off,librdkafka=off",
        LogFormat::Json => "warn,kar=info,rdkafka=off,librdkafka=off",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KAR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => {
            let tags = format!(
                "\"command\":{},\"job\":{},",
                serde_json::Value::from(command),
                job.map_or(serde_json::Value::Null, serde_json::Value::from)
            );
            let inner = tracing_subscriber::fmt::format().json().flatten_event(true);
            builder
                .fmt_fields(JsonFields::new())
                .event_format(Tagged { inner, tags })
                .try_init()
        }
    };
}

/// What a workflow did that earns a log event of its own, with its topic and partition or its
/// subject as fields: at info level (JSON logs show kar's info events; text shows them with
/// `KAR_LOG=kar=info`), a failed partition as a warning in JSON.
pub struct Logged;

impl ProgressSink for Logged {
    fn event(&self, e: &ProgressEvent<'_>) {
        match *e {
            ProgressEvent::PartitionEnded {
                topic,
                partition,
                records,
                error: None,
            } => tracing::info!(target: "kar", topic, partition, records, "partition complete"),
            ProgressEvent::PartitionEnded {
                topic,
                partition,
                records,
                error: Some(error),
            } => failed_partition(topic, partition, records, error),
            ProgressEvent::SchemasBackedUp { subjects, versions } => {
                tracing::info!(target: "kar", subjects, versions, "schema registry captured")
            }
            ProgressEvent::SchemaRegistered {
                subject,
                version,
                id,
            } => tracing::info!(target: "kar", subject, version, id, "schema version registered"),
            ProgressEvent::ModeSet { subject, mode, .. } => tracing::info!(
                target: "kar",
                subject,
                mode = mode.unwrap_or("(its own removed)"),
                "subject mode set"
            ),
            ProgressEvent::MemberClosed {
                path,
                records,
                bytes,
            } => tracing::info!(
                target: "kar",
                member = %path.display(),
                records,
                bytes,
                "continuous member closed"
            ),
            _ => {}
        }
    }
}

/// A failed partition: a warning in JSON logs; as text the command's report names it already, so
/// an informational event there.
fn failed_partition(topic: &str, partition: i32, records: u64, error: &str) {
    macro_rules! failed {
        ($level:ident) => {
            tracing::$level!(
                target: "kar",
                topic,
                partition,
                records,
                error,
                "partition {topic}/{partition} failed: {error}"
            )
        };
    }
    if json() {
        failed!(warn);
    } else {
        failed!(info);
    }
}

/// The sink that logs workflow events (see [`Logged`]).
pub fn sink() -> Progress {
    Progress::to(Logged)
}
