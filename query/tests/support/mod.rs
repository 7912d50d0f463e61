//! What the read-model and projection tests share: CDEvents as JSON, and an ingest through the
//! real ingest path.

use cdlake_ingest::{Ingester, IngesterConfig};
use cdlake_schemas::Origin;
use cdlake_schemas::store::Store;
use serde_json::{Value, json};

/// A CDEvent (spec 0.5.1) from `source`: `ty` is `<subject>.<predicate>`.
pub(crate) fn cdevent(
    source: &str,
    id: &str,
    ty: &str,
    subject: &str,
    time: &str,
    content: Value,
) -> String {
    json!({
        "context": {
            "specversion": "0.5.1",
            "id": id,
            "source": source,
            "type": format!("dev.cdevents.{ty}.0.3.0"),
            "timestamp": time,
        },
        "subject": {"id": subject, "content": content},
    })
    .to_string()
}

/// A store in a new temporary directory, which lives as long as the directory returned.
pub(crate) fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().to_str().unwrap()).unwrap();
    (dir, store)
}

/// Store `events` as one ingester would, committed.
pub(crate) async fn ingest(store: &Store, events: &[String]) {
    let mut ing = Ingester::new(store.clone(), IngesterConfig::default());
    for e in events {
        ing.ingest(e.as_bytes(), Origin::CdEvents, "test")
            .await
            .unwrap();
    }
    ing.flush().await.unwrap();
}
