//! The client against a canned HTTP server on `127.0.0.1:0`: each accepted connection
//! answers its requests from a list, then closes. No coordinate process is needed: these
//! tests pin the client's own rules (decoding, failover, stale connections).

use std::time::Duration;

use bytes::Bytes;
use coordinate_client::{
    Client, ClientError, Condition, Connection, Consistency, Error, ListOptions, Request,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const TIMEOUT: Duration = Duration::from_secs(5);

/// A server whose `i`-th connection answers with `answers[i]`, one request each, in order,
/// and then closes. Returns its address.
async fn serve(answers: Vec<Vec<String>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        for conn_answers in answers {
            let (mut stream, _) = listener.accept().await.unwrap();
            for answer in conn_answers {
                read_request(&mut stream).await;
                stream.write_all(answer.as_bytes()).await.unwrap();
            }
            // Dropping the stream closes the connection.
        }
    });
    addr
}

/// Reads one request's head (the tests send no bodies but on PUT, which they size).
async fn read_request(stream: &mut tokio::net::TcpStream) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap() == 0 {
            return;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.unwrap();
}

/// A `200` with a JSON body.
fn json_answer(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

const GET_OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\netag: \"3\"\r\n\
    x-coordinate-create-revision: 2\r\nx-coordinate-version: 2\r\nx-coordinate-revision: 7\r\n\r\nhello";
const NOT_FOUND: &str = "HTTP/1.1 404 Not Found\r\ncontent-length: 25\r\n\
    x-coordinate-revision: 7\r\n\r\n{\"error\":\"key not found\"}";
const NO_LEADER: &str = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 59\r\n\r\n\
    {\"error\":\"no leader is known; the request was not applied\"}";
const PRECONDITION: &str = "HTTP/1.1 412 Precondition Failed\r\ncontent-length: 22\r\n\r\n\
    {\"current_revision\":3}";

#[tokio::test]
async fn typed_reads_decode_the_headers_and_the_listing() {
    let list = json_answer(
        "{\"kvs\":[{\"create_revision\":5,\"encoding\":\"base64\",\"key\":\"b\",\"mod_revision\":5,\
        \"value\":\"//4=\",\"version\":1},{\"create_revision\":6,\"key\":\"c\",\"mod_revision\":6,\
        \"value\":\"x\",\"version\":1}],\"more\":true,\"revision\":9}",
    );
    let addr = serve(vec![vec![GET_OK.into(), NOT_FOUND.into(), list]]).await;
    let mut client = Client::new(&[addr], TIMEOUT);
    let got = client
        .get("k", Consistency::Linearizable)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.kv.value, Bytes::from("hello"));
    assert_eq!(
        (
            got.kv.create_revision,
            got.kv.mod_revision,
            got.kv.version,
            got.revision
        ),
        (2, 3, 2, 7)
    );
    assert!(client
        .get("nope", Consistency::Serializable)
        .await
        .unwrap()
        .is_none());
    let page = client.list("", &ListOptions::default()).await.unwrap();
    assert_eq!(page.kvs[0].value, Bytes::from_static(&[0xff, 0xfe]));
    assert_eq!(page.kvs[1].key, "c");
    assert!(page.more);
}

#[tokio::test]
async fn a_503_moves_on_and_a_412_is_the_answer() {
    let first = serve(vec![vec![NO_LEADER.into()]]).await;
    let second = serve(vec![vec![PRECONDITION.into()]]).await;
    let mut client = Client::new(&[first, second.clone()], TIMEOUT);
    match client
        .put("k", Bytes::from("v"), Condition::IfMatch(1))
        .await
    {
        Err(Error::Refused {
            status, endpoint, ..
        }) => {
            assert_eq!(status.as_u16(), 412);
            assert_eq!(endpoint, second);
        }
        other => panic!("want a 412 refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_closed_keep_alive_connection_is_replaced_before_sending() {
    // The first connection answers once and closes; the second request must go out on a
    // new connection, not fail on the dead one.
    let addr = serve(vec![vec![GET_OK.into()], vec![GET_OK.into()]]).await;
    let mut conn = Connection::new(addr, TIMEOUT);
    let req = Request::kv_get("k", Consistency::Linearizable);
    assert_eq!(conn.send(&req).await.unwrap().status.as_u16(), 200);
    // Wait (with a deadline) until the client has seen the close: a request racing with it
    // may have been written before the close was seen, and is not what this test is about.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while conn.is_open() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the close was never seen"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let again = conn.send(&req).await.unwrap();
    assert_eq!(again.number("etag"), Some(3));
}

#[tokio::test]
async fn a_write_without_an_answer_is_outcome_unknown() {
    // Accepts, reads the request, never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_request(&mut stream).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    let mut client = Client::new(&[addr], Duration::from_millis(200));
    match client.put("k", Bytes::from("v"), Condition::Always).await {
        Err(e) => assert!(e.outcome_unknown(), "{e}"),
        Ok(r) => panic!("no answer was sent, got {r}"),
    }
}

#[test]
fn the_blocking_connection_sees_refusals_as_unsent() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let mut conn = coordinate_client::blocking::Connection::new(dead, TIMEOUT).unwrap();
    match conn.get("k") {
        Err(e @ ClientError::Connect { .. }) => assert!(e.safe_to_retry(false)),
        other => panic!("want a connect error, got {other:?}"),
    }
}

#[test]
fn the_blocking_connection_follows_a_watch() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let events = "event: put\nid: 6\ndata: {\"key\":\"w\",\"revision\":6}\n\n: keep-alive\n\n\
                  event: delete\nid: 8\ndata: {\"key\":\"w\",\"revision\":8}\n\n";
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n{events}",
        events.len()
    );
    let addr = runtime.block_on(serve(vec![vec![answer]]));
    let mut conn = coordinate_client::blocking::Connection::new(addr, TIMEOUT).unwrap();
    let stream = conn.open(&Request::watch("w", false, 6)).unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    let got: Vec<(String, Option<String>)> = stream
        .events()
        .map(|e| e.map(|e| (e.event, e.id)).unwrap())
        .collect();
    assert_eq!(
        got,
        vec![
            ("put".to_string(), Some("6".to_string())),
            ("delete".to_string(), Some("8".to_string()))
        ]
    );
}
