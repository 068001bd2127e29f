use super::*;
use crate::ruleset::Chain;

/// A stand-in for nft that appends each transaction to a log, and fails (after logging) when
/// the transaction is partial and `fail_partial` is set, or always when `fail_all` is.
struct FakeNft {
    log: std::path::PathBuf,
}

impl FakeNft {
    fn new(name: &str) -> FakeNft {
        let log =
            std::env::temp_dir().join(format!("skiff-proxy-sync-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&log);
        FakeNft { log }
    }

    fn command(&self, fail_partial: bool, fail_all: bool) -> Vec<String> {
        let script = format!(
            "t=$(cat); printf '%s\\n=====\\n' \"$t\" >> '{}'; {} {}",
            self.log.display(),
            if fail_all { "exit 1;" } else { "" },
            if fail_partial {
                "case \"$t\" in 'add table'*) ;; *) exit 1;; esac"
            } else {
                ""
            }
        );
        vec!["sh".into(), "-c".into(), script]
    }

    /// The transactions run so far: `F` for a full replace, `D` for a diff.
    fn runs(&self) -> String {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .split("=====\n")
            .filter(|t| !t.is_empty())
            .map(|t| {
                if t.starts_with("add table ip skiff\ndelete table") {
                    'F'
                } else {
                    'D'
                }
            })
            .collect()
    }
}

impl Drop for FakeNft {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

fn with_chain(n: usize) -> Ruleset {
    Ruleset {
        chains: vec![Chain {
            name: format!("svc_{n}"),
            rules: vec!["drop".into()],
        }],
        ..Ruleset::default()
    }
}

#[tokio::test]
async fn full_first_then_diffs_and_nothing_when_unchanged() {
    let nft = FakeNft::new("diffs");
    let ok = nft.command(false, false);
    let mut applied = Applied::default();
    applied.sync(&ok, with_chain(1)).await.unwrap();
    applied.sync(&ok, with_chain(2)).await.unwrap();
    applied.sync(&ok, with_chain(3)).await.unwrap();
    // Unchanged: nft is not run at all (a failing command would show it was).
    applied
        .sync(&nft.command(false, true), with_chain(3))
        .await
        .unwrap();
    assert_eq!(nft.runs(), "FDD");
}

#[tokio::test]
async fn failed_diff_falls_back_to_full_replace() {
    let nft = FakeNft::new("fallback");
    let mut applied = Applied::default();
    applied
        .sync(&nft.command(false, false), with_chain(1))
        .await
        .unwrap();
    applied
        .sync(&nft.command(true, false), with_chain(2))
        .await
        .unwrap();
    assert_eq!(nft.runs(), "FDF");
    assert_eq!(applied.ruleset, Some(with_chain(2)));
}

#[tokio::test]
async fn after_an_error_the_next_sync_is_full() {
    let nft = FakeNft::new("error");
    let mut applied = Applied::default();
    applied
        .sync(&nft.command(false, false), with_chain(1))
        .await
        .unwrap();
    assert!(applied
        .sync(&nft.command(false, true), with_chain(2))
        .await
        .is_err());
    assert_eq!(applied.ruleset, None);
    applied
        .sync(&nft.command(false, false), with_chain(2))
        .await
        .unwrap();
    assert_eq!(nft.runs(), "FDFF");
}

#[tokio::test]
async fn full_replace_is_due_after_the_period() {
    let nft = FakeNft::new("period");
    let ok = nft.command(false, false);
    let mut applied = Applied::default();
    applied.sync(&ok, with_chain(1)).await.unwrap();
    applied.full_at = Instant::now().checked_sub(FULL_SYNC_PERIOD);
    assert!(applied.full_at.is_some());
    applied.sync(&ok, with_chain(2)).await.unwrap();
    applied.sync(&ok, with_chain(3)).await.unwrap();
    assert_eq!(nft.runs(), "FFD");
}
