//! The embedded response store on a real SQLite file in a temporary folder:
//! owners, deletion, restarts, `max_responses`, `ttl`, pages of input items
//! the agent loop's records (sessions, memory) and the errors of a store that
//! cannot be opened.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hermes_proxy::config;
use hermes_proxy::store::embedded::{Clock, Embedded};
use hermes_proxy::store::{Kind, Order, Page, ResponseStore, StoreError};
use support::stored::response;

const DAY: u64 = 24 * 3600;

fn settings(dir: &tempfile::TempDir, max_responses: u32) -> config::Store {
    config::Store {
        path: dir.path().join("data/hermes.db").display().to_string(),
        max_responses,
        ttl: Duration::from_secs(30 * DAY),
    }
}

/// A clock the test moves by hand.
fn clock(start: u64) -> (Arc<AtomicU64>, Clock) {
    let now = Arc::new(AtomicU64::new(start));
    let read = now.clone();
    (now, Arc::new(move || read.load(Ordering::SeqCst)))
}

#[tokio::test]
async fn a_response_is_read_back_only_by_its_owner_and_deleted_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::open(&settings(&dir, 100)).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    store.put(response("resp_1", "team-a", now)).await.unwrap();

    let got = store.get("team-a", "resp_1").await.unwrap().unwrap();
    assert_eq!(got, response("resp_1", "team-a", now));
    assert_eq!(store.get("team-b", "resp_1").await.unwrap(), None);
    assert_eq!(store.get("team-a", "resp_2").await.unwrap(), None);

    // Another owner cannot delete it either.
    assert!(!store.delete("team-b", "resp_1").await.unwrap());
    assert!(store.delete("team-a", "resp_1").await.unwrap());
    assert!(!store.delete("team-a", "resp_1").await.unwrap());
    assert_eq!(store.get("team-a", "resp_1").await.unwrap(), None);
}

#[tokio::test]
async fn stored_responses_survive_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_, now) = clock(1_000 * DAY);
    {
        let store = Embedded::open_with_clock(&settings(&dir, 100), now.clone()).unwrap();
        store
            .put(response("resp_1", "", 1_000 * DAY))
            .await
            .unwrap();
    }
    let store = Embedded::open_with_clock(&settings(&dir, 100), now).unwrap();
    let got = store.get("", "resp_1").await.unwrap().unwrap();
    assert_eq!(got, response("resp_1", "", 1_000 * DAY));
}

#[tokio::test]
async fn a_write_is_seen_by_the_next_read_before_it_is_awaited_and_many_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (_, now) = clock(1_000 * DAY);
    let store = Embedded::open_with_clock(&settings(&dir, 1_000), now).unwrap();
    // Queued, not awaited: the read asked for next still finds it.
    let written = store.put(response("resp_first", "k", 1_000 * DAY));
    assert!(store.get("k", "resp_first").await.unwrap().is_some());
    written.await.unwrap();
    // Many writes at once all land, and replacing one keeps the count.
    let writes: Vec<_> = (0..300)
        .map(|i| store.put(response(&format!("resp_{}", i % 200), "k", 1_000 * DAY)))
        .collect();
    for write in writes {
        write.await.unwrap();
    }
    for i in 0..200 {
        let got = store.get("k", &format!("resp_{i}")).await.unwrap();
        assert_eq!(got, Some(response(&format!("resp_{i}"), "k", 1_000 * DAY)));
    }
}

#[tokio::test]
async fn the_oldest_go_first_beyond_max_responses() {
    let dir = tempfile::tempdir().unwrap();
    let (_, now) = clock(1_000 * DAY);
    let store = Embedded::open_with_clock(&settings(&dir, 3), now).unwrap();
    for i in 1..=5u64 {
        store
            .put(response(&format!("resp_{i}"), "k", 1_000 * DAY - 10 + i))
            .await
            .unwrap();
    }
    for (id, kept) in [
        ("resp_1", false),
        ("resp_2", false),
        ("resp_3", true),
        ("resp_4", true),
        ("resp_5", true),
    ] {
        assert_eq!(store.get("k", id).await.unwrap().is_some(), kept, "{id}");
    }
    // The count is read again on opening: one more write drops one more.
    drop(store);
    let (_, now) = clock(1_000 * DAY);
    let store = Embedded::open_with_clock(&settings(&dir, 3), now).unwrap();
    store
        .put(response("resp_6", "k", 1_000 * DAY))
        .await
        .unwrap();
    assert_eq!(store.get("k", "resp_3").await.unwrap(), None);
    assert!(store.get("k", "resp_4").await.unwrap().is_some());
    // Replacing a response in place does not count as one more.
    store
        .put(response("resp_6", "k", 1_000 * DAY))
        .await
        .unwrap();
    assert!(store.get("k", "resp_4").await.unwrap().is_some());
}

#[tokio::test]
async fn a_response_expires_after_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let (now, clock) = clock(1_000 * DAY);
    let store = Embedded::open_with_clock(&settings(&dir, 100), clock).unwrap();
    store
        .put(response("resp_old", "k", 1_000 * DAY))
        .await
        .unwrap();

    now.store(1_029 * DAY, Ordering::SeqCst);
    assert!(store.get("k", "resp_old").await.unwrap().is_some());
    now.store(1_031 * DAY, Ordering::SeqCst);
    assert_eq!(store.get("k", "resp_old").await.unwrap(), None);

    // The next write purges it from the file, too.
    store
        .put(response("resp_new", "k", 1_031 * DAY))
        .await
        .unwrap();
    now.store(1_000 * DAY, Ordering::SeqCst);
    assert_eq!(store.get("k", "resp_old").await.unwrap(), None);
    assert!(store.get("k", "resp_new").await.unwrap().is_some());
}

#[tokio::test]
async fn input_items_come_in_pages_for_the_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let (_, now) = clock(1_000 * DAY);
    let store = Embedded::open_with_clock(&settings(&dir, 100), now).unwrap();
    store
        .put(response("resp_1", "k", 1_000 * DAY))
        .await
        .unwrap();

    let page = store
        .input_items(
            "k",
            "resp_1",
            Page {
                after: None,
                limit: 1,
                order: Order::Asc,
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page["data"][0]["id"], "resp_1_in1");
    assert_eq!(page["has_more"], true);
    let newest = store
        .input_items("k", "resp_1", Page::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(newest["first_id"], "resp_1_in2");
    assert_eq!(newest["last_id"], "resp_1_in1");
    assert!(store
        .input_items("other", "resp_1", Page::default())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn records_are_kept_per_kind_and_owner_replaced_survive_reopening_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let (now, clock) = clock(1_000 * DAY);
    let store = Embedded::open_with_clock(&settings(&dir, 100), clock.clone()).unwrap();
    let saved = store.save(Kind::Session, "team-a", "s1", "first".into());
    // Queued when called: a load asked for now sees it.
    assert_eq!(
        store.load(Kind::Session, "team-a", "s1").await.unwrap(),
        Some("first".into())
    );
    saved.await.unwrap();
    store
        .save(Kind::Session, "team-a", "s1", "second".into())
        .await
        .unwrap();
    store
        .save(Kind::Memory, "team-a", "s1", "notes".into())
        .await
        .unwrap();
    assert_eq!(
        store.load(Kind::Session, "team-a", "s1").await.unwrap(),
        Some("second".into())
    );
    assert_eq!(
        store.load(Kind::Memory, "team-a", "s1").await.unwrap(),
        Some("notes".into())
    );
    assert_eq!(
        store.load(Kind::Session, "team-b", "s1").await.unwrap(),
        None
    );
    drop(store);

    let store = Embedded::open_with_clock(&settings(&dir, 100), clock).unwrap();
    assert_eq!(
        store.load(Kind::Session, "team-a", "s1").await.unwrap(),
        Some("second".into())
    );
    // Untouched for longer than ttl: gone.
    now.fetch_add(31 * DAY, Ordering::SeqCst);
    assert_eq!(
        store.load(Kind::Memory, "team-a", "s1").await.unwrap(),
        None
    );
}

#[test]
fn a_store_that_cannot_be_opened_names_its_path() {
    let dir = tempfile::tempdir().unwrap();
    // A file that is not a database.
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x42u8; 4096]).unwrap();
    // A folder where the file should be.
    let folder = dir.path().join("folder.db");
    std::fs::create_dir(&folder).unwrap();
    // A parent that is a file.
    let under_file = garbage.join("hermes.db");
    for path in [garbage, folder, under_file] {
        let settings = config::Store {
            path: path.display().to_string(),
            max_responses: 10,
            ttl: Duration::from_secs(DAY),
        };
        match Embedded::open(&settings) {
            Err(err @ StoreError::Open { .. }) => {
                let message = err.to_string();
                assert!(message.contains(&settings.path), "{message}");
            }
            Err(other) => panic!("{}: unexpected error {other}", settings.path),
            Ok(_) => panic!("{} opened", settings.path),
        }
    }
}
