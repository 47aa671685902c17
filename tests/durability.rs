//! Durability under `kill -9`: a child process writes to the embedded store from many tasks and
//! reports each acknowledged write; the parent kills it with SIGKILL mid-stream, reopens the
//! store and checks that every acknowledged write is there and the history has no gaps. Twenty
//! rounds on the same database, so recovery from a crash is itself crashed into.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use k1s::store::embedded::{EmbeddedOptions, EmbeddedStore};
use k1s::store::Store;

const CHILD_DB: &str = "K1S_DURABILITY_DB";
const CHILD_ROUND: &str = "K1S_DURABILITY_ROUND";
const ROUNDS: usize = 20;
const WRITERS: usize = 32;

/// The child: writes until killed. A no-op unless the parent set the environment.
#[test]
fn durability_child() {
    let (Ok(db), Ok(round)) = (std::env::var(CHILD_DB), std::env::var(CHILD_ROUND)) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let store = EmbeddedStore::open(EmbeddedOptions::new(db)).expect("open store in child");
        let mut tasks = Vec::new();
        for t in 0..WRITERS {
            let store = store.clone();
            let round = round.clone();
            tasks.push(tokio::spawn(async move {
                let shared = format!("/d/{round}/shared/{t}");
                let mut shared_rev = None;
                for i in 0u64.. {
                    let value = format!("v{round}-{t}-{i}.");
                    let (key, kv) = if i % 3 == 2 {
                        let kv = match shared_rev {
                            None => store.create(&shared, Bytes::from(value.clone())).await,
                            Some(rev) => {
                                store.update(&shared, Bytes::from(value.clone()), rev).await
                            }
                        }
                        .expect("shared write");
                        shared_rev = Some(kv.mod_revision);
                        (shared.clone(), kv)
                    } else {
                        let key = format!("/d/{round}/{t}/{i}");
                        let kv = store
                            .create(&key, Bytes::from(value.clone()))
                            .await
                            .expect("create");
                        (key, kv)
                    };
                    // One write call per line, after the store acknowledged the write.
                    let line = format!("ACK {key} {} {value}\n", kv.mod_revision);
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    out.write_all(line.as_bytes()).expect("stdout");
                    out.flush().expect("flush");
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

/// A parsed acknowledgement; `None` for a line cut short by the kill.
fn parse_ack(line: &str) -> Option<(String, i64, String)> {
    let mut parts = line.strip_prefix("ACK ")?.split(' ');
    let key = parts.next()?.to_string();
    let rev = parts.next()?.parse().ok()?;
    let value = parts.next()?.to_string();
    (value.ends_with('.') && parts.next().is_none()).then_some((key, rev, value))
}

#[test]
fn kill_9_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("state.redb");
    let exe = std::env::current_exe().expect("test binary");
    let mut acked: Vec<(String, i64, String)> = Vec::new();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "durability_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DB, &db)
            .env(CHILD_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        // Wait until the child is writing (start-up includes recovering from the last kill,
        // slower on a loaded machine), then let it run a varying while so kills land at
        // different points.
        let mut lines = Vec::new();
        let started = Instant::now();
        while lines.len() < 20 {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(l) => lines.push(l),
                Err(_) if started.elapsed() < Duration::from_secs(60) => {}
                Err(_) => panic!("round {round}: the child acknowledged no write within 60 s"),
            }
        }
        std::thread::sleep(Duration::from_millis(50 + (round as u64 * 37) % 300));
        child.kill().expect("SIGKILL the child");
        child.wait().expect("reap child");
        reader.join().expect("reader");
        lines.extend(rx.try_iter());
        let before = acked.len();
        acked.extend(lines.iter().filter_map(|l| parse_ack(l)));
        assert!(
            acked.len() > before,
            "round {round}: the child acknowledged no write before the kill"
        );
        // Each round checks its own writes and the history they extend...
        let from = acked[..before].iter().map(|a| a.1).max().unwrap_or(0) + 1;
        rt.block_on(verify(&db, &acked[before..], from, round));
    }
    // ...and at the end everything is checked once more.
    rt.block_on(verify(&db, &acked, 1, ROUNDS));
    eprintln!(
        "{ROUNDS} kills, {} acknowledged writes, none lost",
        acked.len()
    );
}

/// Reopens the store and checks every acknowledged write and the history's shape.
async fn verify(db: &std::path::Path, acked: &[(String, i64, String)], from: i64, round: usize) {
    let store = EmbeddedStore::open(EmbeddedOptions::new(db)).expect("reopen after kill");
    let current = store.current_revision().await.expect("revision");
    for (key, rev, value) in acked {
        assert!(
            *rev <= current,
            "round {round}: acked revision {rev} above current {current}"
        );
        let kv = store
            .get(key, *rev)
            .await
            .expect("get acked")
            .unwrap_or_else(|| panic!("round {round}: acknowledged write {key}@{rev} lost"));
        assert_eq!(kv.mod_revision, *rev, "round {round}: {key}");
        assert_eq!(
            kv.value,
            Bytes::from(value.clone()),
            "round {round}: {key}@{rev}"
        );
    }
    // The history from `from` is gapless and agrees with the acknowledgements.
    let mut stream = store.watch("/d/", from).await.expect("watch history");
    let mut by_rev = BTreeMap::new();
    let mut expect = from;
    while expect <= current {
        let batch = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("history replay timed out")
            .expect("history ended")
            .expect("history replay");
        for e in batch {
            assert_eq!(e.revision(), expect, "round {round}: gap in the history");
            by_rev.insert(e.revision(), (e.kv.key.clone(), e.kv.value.clone()));
            expect += 1;
        }
    }
    for (key, rev, value) in acked {
        assert_eq!(
            by_rev.get(rev),
            Some(&(key.clone(), Bytes::from(value.clone()))),
            "round {round}: history disagrees at {rev}"
        );
    }
    store.shutdown().await.expect("shutdown");
}
