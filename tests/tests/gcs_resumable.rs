//! The GCS store's resumable upload when a chunk fails on the way: it asks the server where it
//! is (`Content-Range: bytes */*`, answered 308 with `Range`) and sends only what the server
//! lacks, so the object is whole and nothing is sent twice.
//!
//! Why a canned server and not fake-gcs-server: the emulator does not implement this part of
//! the protocol (measured against the bundled build, and in its source, `uploadFileContent`): it
//! appends every chunk whatever its `Content-Range` start, and it completes the object on a
//! status query. So the server here speaks only the resumable session as GCS documents it:
//! chunks at the offset it holds, 308 with `Range: bytes=0-N` until the last one, 200 with the
//! object after it, a status query answered like a chunk of nothing, 499 for a cancelled session.
//! One chunk is failed on demand, as a flaky network fails it: it never arrives (503), or it
//! arrives and its answer is lost (stored, then 503).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use snapshot_sync::config::GcsConfig;
use snapshot_sync::store;

/// What happens to the chosen chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Not stored; 503.
    NeverArrives,
    /// Stored; 503 instead of the 308.
    AnswerLost,
}

/// The one session's state.
#[derive(Debug, Default)]
struct Session {
    /// Bytes held, in order.
    held: Vec<u8>,
    /// Whether the object exists.
    done: bool,
    /// Chunk requests that carried bytes.
    chunks: usize,
    /// Bytes received in all requests (resent bytes count twice).
    received: usize,
    /// Status queries.
    queries: usize,
}

/// Starts the canned server; the fault hits the `nth` chunk that carries bytes.
fn start(fault: Fault, nth: usize) -> (String, Arc<Mutex<Session>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = Arc::new(Mutex::new(Session::default()));
    let (s, u) = (Arc::clone(&state), url.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let _ = serve(conn, &u, &s, fault, nth);
        }
    });
    (url, state)
}

fn serve(
    conn: TcpStream,
    url: &str,
    state: &Mutex<Session>,
    fault: Fault,
    nth: usize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let (mut length, mut range) = (0usize, String::new());
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or((&line, ""));
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap_or(0),
            "content-range" => value.trim().clone_into(&mut range),
            _ => {}
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let mut conn = conn;
    let mut answer = |status: &str, headers: &str, body: &str| {
        write!(
            conn,
            "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    if request.starts_with("POST /upload/storage/v1/b/bucket/o?") {
        return answer("200 OK", &format!("Location: {url}/session\r\n"), "");
    }
    if request.starts_with("DELETE /session") {
        return answer("499 Client Closed Request", "", "");
    }
    assert!(request.starts_with("PUT /session"), "{request}");
    let mut s = state.lock().unwrap();
    // `bytes a-b/total`, `bytes a-b/*`, `bytes */total` or `bytes */*`.
    let spec = range.strip_prefix("bytes ").expect("a Content-Range");
    let (span, total) = spec.split_once('/').unwrap();
    let total: Option<usize> = total.parse().ok();
    if span == "*" {
        s.queries += 1;
    } else {
        let start: usize = span.split_once('-').unwrap().0.parse().unwrap();
        assert!(
            start <= s.held.len(),
            "a chunk from {start} while the server holds {}: bytes skipped",
            s.held.len()
        );
        s.chunks += 1;
        s.received += body.len();
        let faulty = s.chunks == nth;
        if faulty && fault == Fault::NeverArrives {
            return answer("503 Service Unavailable", "", "");
        }
        // Bytes the server already holds are not stored twice, as GCS does with a resent range.
        let new = &body[(s.held.len() - start).min(body.len())..];
        s.held.extend_from_slice(new);
        if faulty {
            return answer("503 Service Unavailable", "", "");
        }
    }
    if total == Some(s.held.len()) {
        s.done = true;
        return answer("200 OK", "", "{}");
    }
    let range = if s.held.is_empty() {
        String::new()
    } else {
        format!("Range: bytes=0-{}\r\n", s.held.len() - 1)
    };
    answer("308 Resume Incomplete", &range, "")
}

/// Uploads 20 MiB (chunks of 8, 8 and 4 MiB) with the `nth` chunk failed.
fn upload_with(fault: Fault, nth: usize) -> (Vec<u8>, Arc<Mutex<Session>>) {
    let (url, state) = start(fault, nth);
    let gcs = store::gcs(&GcsConfig {
        bucket: "bucket".into(),
        prefix: String::new(),
        service_account_path: None,
        service_account_key: Some(vault_backup_common::env::Secret::new(
            r#"{"disable_oauth":true,"client_email":"","private_key":"","private_key_id":""}"#,
        )),
        application_credentials: None,
        base_url: Some(url),
    })
    .unwrap();
    let file: Vec<u8> = (0..20u32 << 20).map(|i| (i % 251) as u8).collect();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut writer = gcs.begin("vault-20261124T060000Z.snap").await.unwrap();
        for chunk in file.chunks(gcs.chunk_size()) {
            writer.write(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        writer.finish().await.unwrap();
    });
    (file, state)
}

#[test]
fn a_chunk_that_never_arrived_is_sent_again() {
    let (file, state) = upload_with(Fault::NeverArrives, 2);
    let s = state.lock().unwrap();
    assert!(s.done && s.held == file, "the object is the file");
    assert_eq!(s.queries, 1, "one status query after the failure");
    // The failed chunk went out twice: once lost, once stored.
    assert_eq!(s.received, file.len() + (8 << 20));
}

#[test]
fn a_chunk_whose_answer_was_lost_is_not_sent_again() {
    let (file, state) = upload_with(Fault::AnswerLost, 2);
    let s = state.lock().unwrap();
    assert!(s.done && s.held == file, "the object is the file");
    assert_eq!(s.queries, 1, "one status query after the failure");
    assert_eq!(s.received, file.len(), "nothing was sent twice");
}

#[test]
fn the_last_chunk_failing_is_completed_by_the_status_query_or_sent_again() {
    for fault in [Fault::NeverArrives, Fault::AnswerLost] {
        let (file, state) = upload_with(fault, 3);
        let s = state.lock().unwrap();
        assert!(
            s.done && s.held == file,
            "{fault:?}: the object is the file"
        );
    }
}
