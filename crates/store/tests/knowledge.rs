//! Knowledge chunks and file processing states, on every backend.

use voxgate_domain::clock::new_id;
use voxgate_domain::{FileRecord, FileStatus};
use voxgate_store::StoreError;
use voxgate_testkit::{TestDb, file_record};

fn processing_file() -> FileRecord {
    file_record(FileStatus::Processing)
}

fn chunks(n: usize) -> Vec<(String, Vec<u8>)> {
    // Bytes of every value, NUL included: the blob must come back as it went in.
    (0..n).map(|i| (format!("chunk {i} — ünïcode"), (0..=255u8).map(|b| b.wrapping_add(i as u8)).collect())).collect()
}

#[tokio::test]
async fn a_processed_file_keeps_its_chunks_in_order_until_deleted() {
    for db in TestDb::all().await {
        let store = db.store().await;
        let f = processing_file();
        store.insert_file(&f).await.unwrap();
        assert_eq!(store.processing_files().await.unwrap().iter().filter(|p| p.id == f.id).count(), 1, "{}", db.name);

        // More than one INSERT batch.
        let want = chunks(450);
        store.complete_file(&f.id, &want).await.unwrap();
        let got = store.get_file(&f.id).await.unwrap();
        assert_eq!(got.status, FileStatus::Ready, "{}", db.name);
        assert_eq!(got.chunk_count, 450);
        assert!(got.processed_at.is_some());
        let stored = store.file_chunks(&f.id).await.unwrap();
        assert_eq!(stored.len(), 450);
        for (n, (c, (text, bytes))) in stored.iter().zip(&want).enumerate() {
            assert_eq!((c.idx, &c.text, &c.embedding), (n as i64, text, bytes), "{}", db.name);
        }
        // Finished once: a second completion is refused and changes nothing.
        assert!(matches!(store.complete_file(&f.id, &chunks(2)).await, Err(StoreError::NotFound)));
        assert_eq!(store.file_chunks(&f.id).await.unwrap().len(), 450);

        store.delete_file(&f.id).await.unwrap();
        assert!(store.file_chunks(&f.id).await.unwrap().is_empty(), "{}: chunks outlived their file", db.name);
        assert!(store.files_by_ids(std::slice::from_ref(&f.id)).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_file_deleted_while_processing_gets_no_chunks() {
    for db in TestDb::all().await {
        let store = db.store().await;
        let f = processing_file();
        store.insert_file(&f).await.unwrap();
        store.delete_file(&f.id).await.unwrap();
        assert!(matches!(store.complete_file(&f.id, &chunks(3)).await, Err(StoreError::NotFound)), "{}", db.name);
        assert!(store.file_chunks(&f.id).await.unwrap().is_empty(), "{}", db.name);
        assert!(matches!(store.fail_file(&f.id, "x", "y").await, Err(StoreError::NotFound)));
    }
}

#[tokio::test]
async fn a_failed_file_says_why_and_leaves_the_queue() {
    for db in TestDb::all().await {
        let store = db.store().await;
        let f = processing_file();
        store.insert_file(&f).await.unwrap();
        store.fail_file(&f.id, "unsupported-type", "the file is a zip archive, not a PDF").await.unwrap();
        let got = store.get_file(&f.id).await.unwrap();
        assert_eq!(got.status, FileStatus::Failed);
        let e = got.error.clone().expect("an error");
        assert_eq!((e.code.as_str(), e.message.as_str()), ("unsupported-type", "the file is a zip archive, not a PDF"));
        assert!(!store.processing_files().await.unwrap().iter().any(|p| p.id == f.id), "{}", db.name);
        let json = serde_json::to_value(&got).unwrap();
        assert_eq!(json["status"], "failed");
        assert_eq!(json["error"]["code"], "unsupported-type");
        assert!(json.get("storagePath").is_none());
    }
}

#[tokio::test]
async fn files_by_ids_returns_only_those_that_exist() {
    for db in TestDb::all().await {
        let store = db.store().await;
        let (a, b) = (processing_file(), processing_file());
        store.insert_file(&a).await.unwrap();
        store.insert_file(&b).await.unwrap();
        let mut ids: Vec<String> = (0..300).map(|_| new_id()).collect();
        ids.push(a.id.clone());
        ids.push(b.id.clone());
        ids.push("'; DROP TABLE files; --".into());
        let mut got: Vec<String> = store.files_by_ids(&ids).await.unwrap().into_iter().map(|f| f.id).collect();
        got.sort();
        let mut want = vec![a.id, b.id];
        want.sort();
        assert_eq!(got, want, "{}", db.name);
    }
}
