//! `cdlake import`: files of CDEvents or CloudEvents into the store, through the same ingest
//! path as every receiver. Rejected records go to the dead letters with their reason; the rest
//! of each file is imported.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use cdlake_ingest::ingester::Outcome;
use cdlake_ingest::records::{self, Record};
use cdlake_ingest::{Ingester, IngesterConfig};
use cdlake_schemas::cdevents::Rejection;
use cdlake_schemas::{DeadLetter, Origin};
use indicatif::{ProgressBar, ProgressStyle};

use super::StoreArgs;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    rules: super::RulesArgs,
    /// Exit with status 2 when any record was rejected.
    #[arg(long)]
    strict: bool,
    /// JSON Lines or JSON array files; `-` reads standard input.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Counts of an import.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) imported: u64,
    pub(crate) duplicate: u64,
    pub(crate) rejected: u64,
    pub(crate) reasons: BTreeMap<String, u64>,
}

impl Counts {
    pub(crate) fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Accepted => self.imported += 1,
            Outcome::Duplicate | Outcome::Ignored => self.duplicate += 1,
            Outcome::Rejected(rejection) => {
                self.rejected += 1;
                // Group reasons by their first clause, so a summary stays short.
                let reason = rejection.message;
                let short = reason.split(':').next().unwrap_or(&reason).to_string();
                *self.reasons.entry(short).or_default() += 1;
            }
        }
    }
}

fn read_input(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading standard input")?;
        Ok(buf)
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    }
}

pub(crate) async fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    let store = args.store.open()?;
    let writer = IngesterConfig {
        services: args.rules.services()?,
        ..IngesterConfig::default()
    };
    let mut ingester = Ingester::new(store, writer);
    let sizes: u64 = args
        .files
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let bar = ProgressBar::new(sizes.max(1));
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} importing {msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut counts = Counts::default();
    for path in &args.files {
        let name = path.display().to_string();
        bar.set_message(name.clone());
        let input = read_input(path)?;
        let mut done = 0usize;
        for record in records::split(&input) {
            let (raw, line) = match &record {
                Record::Value { raw, line } | Record::Malformed { raw, line, .. } => (*raw, *line),
            };
            let source = format!("import:{name}:{line}");
            let outcome = match record {
                Record::Value { raw, .. } => {
                    ingester.ingest(raw, Origin::CdEvents, &source).await?
                }
                Record::Malformed { raw, reason, .. } => {
                    ingester.push_dead_letter(DeadLetter {
                        received_at: cdlake_ingest::ingester::now_micros(),
                        origin: Origin::CdEvents.as_str().to_string(),
                        source,
                        reason: reason.clone(),
                        payload: raw.to_vec(),
                    });
                    Outcome::Rejected(Rejection::malformed_json(reason))
                }
            };
            counts.add(outcome);
            let end = raw.as_ptr() as usize + raw.len() - input.as_ptr() as usize;
            bar.inc(end.saturating_sub(done) as u64);
            done = end.max(done);
            if ingester.should_flush() {
                ingester.flush().await.context("committing to the store")?;
            }
        }
        bar.inc((input.len() - done) as u64);
    }
    let report = ingester.flush().await.context("committing to the store")?;
    bar.finish_and_clear();
    super::checkpoint_when_done(&ingester).await;
    tracing::info!(files = report.files.len(), "Import committed.");
    println!(
        "imported {}, duplicate {}, rejected {}",
        counts.imported, counts.duplicate, counts.rejected
    );
    for (reason, n) in &counts.reasons {
        eprintln!(
            "  rejected {n}: {reason} (see: cdlake sql \"SELECT source, reason FROM dead_letters\")"
        );
    }
    Ok(if args.strict && counts.rejected > 0 {
        std::process::ExitCode::from(2)
    } else {
        std::process::ExitCode::SUCCESS
    })
}
