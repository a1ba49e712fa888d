//! Hot reload: SIGHUP, or a change in the config file's or a secret file's
//! directory (Kubernetes swaps a `..data` symlink in the mounted directory, so
//! watching the files themselves would go silent after the first swap).
//! Parse → validate → atomic swap; an invalid config keeps the current one.
//! The files the config on disk names are watched even when it was rejected,
//! and re-checked every few seconds while it stands rejected (their directory
//! may not exist yet), so fixing the cause — say, the missing secret file
//! appearing — is enough.

use crate::state::AppState;
use notify::{EventKind, RecursiveMode, Watcher};
use std::{collections::BTreeSet, path::PathBuf, sync::Arc, time::Duration};

/// Changes closer together than this become one reload.
const DEBOUNCE: Duration = Duration::from_millis(250);
/// How often a rejected config's files are re-checked without an event.
const RETRY_REJECTED: Duration = Duration::from_secs(2);

pub fn spawn(state: Arc<AppState>) -> anyhow::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();

    let hup_tx = tx.clone();
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let _ = hup_tx.send("SIGHUP");
        }
    });

    let file_tx = tx;
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !matches!(event.kind, EventKind::Access(_))
        {
            let _ = file_tx.send("file change");
        }
    })?;
    let mut dirs = BTreeSet::new();
    watch_dirs(&mut watcher, &mut dirs, &state.watched_files());
    tracing::info!(?dirs, "watching for config changes (and SIGHUP)");

    // Taken now, not when the task first runs: a change made in between (the
    // task may start late on a busy machine) must still count as a change.
    let mut seen = fingerprint(&state.watched_files());
    tokio::spawn(async move {
        loop {
            let retry = state.last_reload_rejected();
            let reason = tokio::select! {
                r = rx.recv() => match r { Some(r) => r, None => return },
                _ = tokio::time::sleep(RETRY_REJECTED), if retry => "rejected config's files re-checked",
            };
            tokio::time::sleep(DEBOUNCE).await;
            let mut reason = reason;
            while let Ok(more) = rx.try_recv() {
                if more == "SIGHUP" {
                    reason = more;
                }
            }
            // Directories see unrelated writes (a log file, an editor's swap file):
            // reload only when what we read changed, or when asked by SIGHUP.
            let now = fingerprint(&state.watched_files());
            if reason != "SIGHUP" && now == seen {
                continue;
            }
            tracing::info!(reason, "reloading configuration");
            let version = |s: &AppState| s.live().settings.rollout.as_ref().map(|r| r.version);
            let before = version(&state);
            if state.reload().is_ok() && version(&state).is_some() && version(&state) != before {
                crate::rollout::announce::announce(state.clone());
            }
            // The new (or rejected) config may name files in directories not watched yet.
            watch_dirs(&mut watcher, &mut dirs, &state.watched_files());
            // What was read before this reload, not after: a file that changed
            // while it ran (a missing secret appearing) is still a change.
            seen = now;
        }
    });
    Ok(())
}

/// Watches the directory of every file not watched yet (those that exist).
fn watch_dirs(watcher: &mut impl Watcher, dirs: &mut BTreeSet<PathBuf>, files: &[PathBuf]) {
    for dir in files.iter().filter_map(|f| std::path::absolute(f).ok()?.parent().map(PathBuf::from)) {
        if !dirs.contains(&dir) && watcher.watch(&dir, RecursiveMode::NonRecursive).is_ok() {
            dirs.insert(dir);
        }
    }
}

/// The contents of every watched file (following symlinks), as one hash.
fn fingerprint(files: &[PathBuf]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in files {
        f.hash(&mut h);
        std::fs::read(f).ok().hash(&mut h);
    }
    h.finish()
}
