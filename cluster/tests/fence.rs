//! The fence against a real PostgreSQL (`archive::testing::PgServer`;
//! without the server binaries it fails, naming
//! scripts/install-test-deps.sh): epochs only go up, a stale writer's
//! transaction fails whole, and a takeover waits for the batch in flight.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use archive::testing::PgServer;
use cluster::{fence, FenceError};
use postgres::{Client, NoTls};

fn connect(url: &str) -> Client {
    let mut db = Client::connect(url, NoTls).unwrap();
    fence::install(&mut db).unwrap();
    db
}

#[test]
fn epochs_only_go_up_and_a_stale_writer_s_transaction_fails_whole() {
    let pg = PgServer::new().unwrap_or_else(|e| panic!("test PostgreSQL: {e}"));
    let url = pg.create_database("fence_epochs").unwrap();
    let mut db = connect(&url);
    // Installing again (a second node starting) changes nothing.
    fence::install(&mut db).unwrap();
    db.batch_execute("CREATE TABLE rows (shard INT4, epoch INT8)")
        .unwrap();

    let batch = |db: &mut Client, shard: u32, epoch: i64| -> Result<(), FenceError> {
        let mut tx = db.transaction()?;
        tx.execute(
            "INSERT INTO rows VALUES ($1, $2)",
            &[&(shard as i32), &epoch],
        )?;
        fence::check(&mut tx, shard, epoch, "n")?;
        tx.commit()?;
        Ok(())
    };
    assert_eq!(fence::stored(&mut db, 3).unwrap(), None);
    batch(&mut db, 3, 5).unwrap();
    batch(&mut db, 3, 5).unwrap();
    assert_eq!(fence::stored(&mut db, 3).unwrap(), Some(5));
    batch(&mut db, 3, 7).unwrap();
    assert_eq!(fence::stored(&mut db, 3).unwrap(), Some(7));
    match batch(&mut db, 3, 5) {
        Err(FenceError::Fenced {
            shard,
            stored,
            writer,
        }) => assert_eq!((shard, stored, writer), (3, 7, 5)),
        other => panic!("{other:?}"),
    }
    // Another shard is its own fence.
    batch(&mut db, 4, 6).unwrap();
    assert_eq!(fence::stored(&mut db, 3).unwrap(), Some(7));
    // The fenced batch's row is not there; the others are.
    let rows: Vec<(i32, i64)> = db
        .query("SELECT shard, epoch FROM rows ORDER BY shard, epoch", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, vec![(3, 5), (3, 5), (3, 7), (4, 6)]);
    assert!(matches!(
        batch(&mut db, 4_096, 1),
        Err(FenceError::Argument(_))
    ));
    assert!(matches!(batch(&mut db, 1, 0), Err(FenceError::Argument(_))));
}

#[test]
fn a_takeover_waits_for_the_batch_in_flight_and_fences_the_next() {
    let pg = PgServer::new().unwrap_or_else(|e| panic!("test PostgreSQL: {e}"));
    let url = pg.create_database("fence_order").unwrap();
    let mut old = connect(&url);
    let mut new = connect(&url);

    // The old owner's batch has passed its fence and is still writing.
    let mut tx = old.transaction().unwrap();
    fence::check(&mut tx, 9, 41, "old").unwrap();
    let committed = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&committed);
    let takeover = std::thread::spawn(move || {
        let mut t = new.transaction().unwrap();
        fence::check(&mut t, 9, 57, "new").unwrap();
        // The row lock made the takeover wait for the old batch's commit.
        assert!(
            seen.load(Ordering::SeqCst),
            "the takeover passed the fence before the batch in flight committed"
        );
        t.commit().unwrap();
    });
    // Gives the takeover time to reach the lock (if it does not wait, it
    // fails its assertion; if it is slow to start, it passes anyway).
    std::thread::sleep(Duration::from_millis(300));
    committed.store(true, Ordering::SeqCst);
    tx.commit().unwrap();
    takeover.join().unwrap();

    let mut tx = old.transaction().unwrap();
    assert!(matches!(
        fence::check(&mut tx, 9, 41, "old"),
        Err(FenceError::Fenced {
            stored: 57,
            writer: 41,
            ..
        })
    ));
    drop(tx);
    assert_eq!(fence::stored(&mut old, 9).unwrap(), Some(57));
}
