//! Raw HTTP/1.1 over a TCP stream, for answers a server may give before reading the request
//! body (a 413 decided from the headers), which a regular client cannot observe.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::client::REQUEST_TIMEOUT;

/// How long to wait for an interim or final answer before sending the body (a server that
/// ignores `Expect` sends nothing until it has the body).
const CONTINUE_WAIT: Duration = Duration::from_secs(2);

/// `PUT` of a `len`-byte body over a raw connection with `Expect: 100-continue`, so a server
/// that rejects the request from its headers (413) can answer without reading the body; if it
/// asks for the body (or ignores `Expect`), the body is written from another thread while this
/// one reads the answer, so an answer sent before the body is consumed is not lost.
/// Returns the final status code.
pub fn raw_put_status(addr: &str, path: &str, len: usize) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_write_timeout(Some(REQUEST_TIMEOUT))
        .expect("set write timeout");
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {len}\r\n\
         Expect: 100-continue\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(head.as_bytes())
        .expect("send request head");

    // A bounded wait for an interim or final answer before sending the body (a server that
    // ignores `Expect` sends nothing until it has the body).
    stream
        .set_read_timeout(Some(CONTINUE_WAIT))
        .expect("set read timeout");
    let mut buf = Vec::new();
    if let Some(status) = read_status_line(&mut stream, &mut buf) {
        if status != 100 {
            return status;
        }
        let end = read_head_end(&mut stream, &mut buf).expect("end of 100 Continue head");
        buf.drain(..end);
    }
    stream
        .set_read_timeout(Some(REQUEST_TIMEOUT))
        .expect("set read timeout");

    let mut writer = stream.try_clone().expect("clone stream");
    let sender = std::thread::spawn(move || {
        // The server may answer and close before reading all of it; the answer is what counts.
        let _ = writer.write_all(&vec![b'x'; len]);
    });
    let status = loop {
        match read_status_line(&mut stream, &mut buf) {
            Some(100) => {
                let end = read_head_end(&mut stream, &mut buf).expect("end of 100 Continue head");
                buf.drain(..end);
            }
            Some(status) => break status,
            None => panic!(
                "PUT {path} on {addr}: no response status; got {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
    };
    // Unblock the sender if the server stopped reading.
    let _ = stream.shutdown(std::net::Shutdown::Both);
    sender.join().expect("body sender thread");
    status
}

/// Reads until `buf` holds a full response head; the offset just past it.
fn read_head_end(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            return Some(end + 4);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads until `buf` holds a full status line; its code, or `None` on timeout/EOF/garbage.
fn read_status_line(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<u16> {
    loop {
        if let Some(end) = find(buf, b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..end]).to_string();
            // "HTTP/1.1 413 Payload Too Large"
            return line.split_whitespace().nth(1)?.parse().ok();
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
