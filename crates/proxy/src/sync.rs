//! Keeping the kernel's `table ip skiff` in step with the planned [`Ruleset`]: whole at
//! first, then by differences, as kube-proxy's nftables mode does.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::{apply, diff, Ruleset};

/// How often a sync replaces the whole table instead of applying the difference to the last
/// one, repairing anything else changed in it; upstream's nftables mode resyncs hourly.
const FULL_SYNC_PERIOD: Duration = Duration::from_secs(3600);

/// What the kernel's table holds, as far as the proxy knows.
#[derive(Default)]
pub(crate) struct Applied {
    /// The ruleset last applied successfully; `None` at start and after a failure, when the
    /// table's state is unknown and only a full replace can be trusted.
    ruleset: Option<Ruleset>,
    /// When the table was last replaced whole.
    full_at: Option<Instant>,
}

impl Applied {
    /// Brings the table to `next`: a full replace at start, after an error and once per
    /// [`FULL_SYNC_PERIOD`]; otherwise only the difference, falling back to a full replace
    /// when that fails.
    pub(crate) async fn sync(&mut self, nft: &[String], next: Ruleset) -> Result<()> {
        let start = Instant::now();
        let due = self
            .full_at
            .is_none_or(|at| at.elapsed() >= FULL_SYNC_PERIOD);
        if let (Some(prev), false) = (&self.ruleset, due) {
            let text = diff(prev, &next);
            if text.is_empty() {
                return Ok(());
            }
            match apply(nft, &text).await {
                Ok(()) => {
                    tracing::debug!(elapsed = ?start.elapsed(), "nftables rules updated");
                    self.ruleset = Some(next);
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "partial nftables update failed, replacing the table");
                }
            }
        }
        self.ruleset = None;
        apply(nft, &next.to_table()).await?;
        tracing::debug!(elapsed = ?start.elapsed(), "nftables table replaced");
        self.ruleset = Some(next);
        self.full_at = Some(Instant::now());
        Ok(())
    }
}

#[cfg(test)]
mod tests;
