//! `--metrics-addr` and `--metrics-textfile`: the run's [`Metrics`] served over HTTP while it
//! goes on, and written for node_exporter's textfile collector when it starts, every 10 s, and
//! when it ends (also when it fails: the failure is in the file).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use clap::Args;

use crate::metrics::Metrics;
use crate::metrics::textfile::{self, Earlier};
use crate::progress::Progress;

/// How often a long run rewrites its textfile.
const TEXTFILE_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics on http://IP:PORT/metrics while the command runs
    #[arg(long, global = true, value_name = "IP:PORT")]
    pub metrics_addr: Option<SocketAddr>,
    /// Write the metrics to this file (node_exporter's textfile collector reads *.prom) at the
    /// start, every 10 s and at the end, each time whole (a temporary file renamed over it)
    #[arg(long, global = true, value_name = "PATH")]
    pub metrics_textfile: Option<PathBuf>,
}

/// The metrics of this run, where asked for.
#[derive(Default)]
pub struct RunMetrics {
    metrics: Option<Arc<Metrics>>,
    textfile: Option<PathBuf>,
    writer: Option<(Sender<()>, JoinHandle<()>)>,
}

impl RunMetrics {
    /// Starts what `a` asks for: the first textfile, then the endpoint (so that a directory
    /// that cannot be written or a port in use stops the command before it does anything). The
    /// metrics are kept whatever failed, so that a textfile that was written ends with the
    /// failure in it.
    pub fn start(
        a: &MetricsArgs,
        command: &str,
        job: Option<&str>,
    ) -> (RunMetrics, anyhow::Result<()>) {
        if a.metrics_addr.is_none() && a.metrics_textfile.is_none() {
            return (RunMetrics::default(), Ok(()));
        }
        let metrics = Arc::new(Metrics::new(command, job));
        let mut run = RunMetrics {
            metrics: Some(metrics.clone()),
            textfile: None,
            writer: None,
        };
        if let Some(path) = &a.metrics_textfile {
            metrics.carry_over(&Earlier::read(path, command, job));
            if let Err(e) = textfile::write(path, &metrics.text()) {
                let e = anyhow::Error::new(e)
                    .context(format!("writing the metrics textfile {}", path.display()));
                return (run, Err(e));
            }
            run.textfile = Some(path.clone());
            match rewrite_every(path.clone(), metrics.clone()) {
                Ok(w) => run.writer = Some(w),
                Err(e) => return (run, Err(e)),
            }
        }
        if let Some(addr) = a.metrics_addr {
            match crate::metrics::serve::serve(addr, metrics) {
                Ok(bound) => {
                    tracing::info!(target: "kar", %bound, "serving metrics on http://{bound}/metrics")
                }
                Err(e) => {
                    let e = anyhow::Error::new(e).context(format!("serving metrics on {addr}"));
                    return (run, Err(e));
                }
            }
        }
        (run, Ok(()))
    }

    /// The sink a workflow's options take, to count into the metrics (none if not asked for).
    pub fn sink(&self) -> Progress {
        self.metrics
            .as_ref()
            .map_or_else(Progress::default, |m| Progress::to(m.clone()))
    }

    /// Records how the run ended and writes the last textfile; a textfile that cannot be
    /// written is a warning (the command's own work is done and stands).
    pub fn finish(mut self, exit_code: u8) {
        let Some(m) = &self.metrics else { return };
        m.finish(exit_code);
        if let Some((stop, handle)) = self.writer.take() {
            drop(stop);
            let _ = handle.join();
        }
        if let Some(path) = &self.textfile
            && let Err(e) = textfile::write(path, &m.text())
        {
            super::logs::warning(&format!(
                "writing the metrics textfile {}: {e}; it still holds the previous values",
                path.display()
            ));
        }
    }
}

/// A thread rewriting the textfile every [`TEXTFILE_EVERY`] until its sender is dropped.
fn rewrite_every(path: PathBuf, m: Arc<Metrics>) -> anyhow::Result<(Sender<()>, JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("kar-textfile".into())
        .spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(TEXTFILE_EVERY) {
                if let Err(e) = textfile::write(&path, &m.text()) {
                    tracing::warn!(target: "kar", "writing the metrics textfile {}: {e}", path.display());
                }
            }
        })?;
    Ok((tx, handle))
}
