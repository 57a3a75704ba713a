//! Property tests of the HTTP decoders: whatever bytes a client sends in a path, a query, a
//! header or a `/v1/txn` body, the decoder does not panic, and a refusal is a 4xx with a
//! reason — never a 5xx. Random input, and input mutated from valid requests.

use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use proptest::prelude::*;
use serde_json::{json, Value};

use super::kv::{key_of, precondition, txn_request, TxnBody};
use super::members::node_id;
use super::root::root_key;
use super::{percent_decode, query_params, ApiError};

/// Cases per property: enough to find the obvious, fast enough for every `cargo test`.
const CASES: u32 = 1000;

fn is_client_error(e: &ApiError) -> bool {
    e.status.is_client_error() && !e.reason.is_empty()
}

/// Percent-encodes every byte that is not unreserved.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Text made mostly of the characters that matter to the decoders.
fn tricky() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("%".to_string()),
            Just("+".to_string()),
            Just("&".to_string()),
            Just("=".to_string()),
            Just("/".to_string()),
            Just("%ff".to_string()),
            Just("%C3".to_string()),
            Just("%e2%9c%93".to_string()),
            "[0-9a-fA-F]{1,2}",
            any::<char>().prop_map(String::from),
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

/// A JSON value of any type, small.
fn any_json() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::from),
        "[A-Za-z0-9+/=]{0,16}".prop_map(Value::from),
    ]
}

fn one_of(known: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(known).prop_map(String::from),
        1 => ".{0,6}",
    ]
}

/// A `/v1/txn` body close to a valid one, with every field possibly wrong.
fn txn_body() -> impl Strategy<Value = Value> {
    let compare = (
        ".{0,8}",
        one_of(&["value", "mod_revision", "version", "exists"]),
        one_of(&["==", "=", "!=", ">", "<"]),
        any_json(),
    )
        .prop_map(|(key, target, op, value)| {
            json!({"key": key, "target": target, "op": op, "value": value})
        });
    let write = || {
        (
            one_of(&["put", "delete"]),
            ".{0,8}",
            proptest::option::of(".{0,40}"),
        )
            .prop_map(|(op, key, value)| match value {
                Some(v) => json!({"op": op, "key": key, "value": v}),
                None => json!({"op": op, "key": key}),
            })
    };
    (
        proptest::collection::vec(compare, 0..4),
        proptest::collection::vec(write(), 0..4),
        proptest::collection::vec(write(), 0..4),
        proptest::option::of(one_of(&["utf8", "base64"])),
    )
        .prop_map(|(compare, success, failure, encoding)| {
            let mut body = json!({"compare": compare, "success": success, "failure": failure});
            if let Some(e) = encoding {
                body["encoding"] = Value::from(e);
            }
            body
        })
}

/// Decodes a `/v1/txn` body as the handler does; `Ok` if it would be proposed.
fn decode_txn(body: &[u8], max_value: usize) -> Result<(), ApiError> {
    let req: TxnBody = serde_json::from_slice(body)
        .map_err(|e| super::bad_request(format!("invalid JSON transaction: {e}")))?;
    txn_request(req, max_value).map(|_| ())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn percent_decode_never_panics(s in tricky(), plus in any::<bool>()) {
        match percent_decode(&s, plus) {
            Ok(out) => prop_assert!(out.len() <= s.len()),
            Err(e) => prop_assert!(is_client_error(&e), "{e:?}"),
        }
    }

    #[test]
    fn a_percent_takes_two_hex_digits(a in any::<u8>(), b in any::<u8>()) {
        let s = format!("%{}{}", a as char, b as char);
        let hex = a.is_ascii_hexdigit() && b.is_ascii_hexdigit();
        if !hex {
            prop_assert!(percent_decode(&s, false).is_err(), "{s:?}");
        }
    }

    #[test]
    fn percent_decode_inverts_encoding(s in ".{0,32}") {
        let decoded = percent_decode(&encode(&s), false);
        prop_assert_eq!(decoded.ok(), Some(s));
    }

    #[test]
    fn query_params_never_panic(q in tricky()) {
        if let Ok(uri) = format!("/v1/kv/x?{q}").parse::<Uri>() {
            if let Err(e) = query_params(&uri) {
                prop_assert!(is_client_error(&e), "{e:?}");
            }
        }
    }

    #[test]
    fn paths_never_panic(p in tricky(), put in any::<bool>()) {
        if let Ok(uri) = format!("/{p}").parse::<Uri>() {
            let method = if put { Method::PUT } else { Method::GET };
            if let Err(e) = root_key(uri.path(), &method) {
                prop_assert!(is_client_error(&e), "{e:?}");
            }
            for prefix in ["/v1/kv", "/v1/watch"] {
                if let Err(e) = key_of(&uri, prefix) {
                    prop_assert!(is_client_error(&e), "{e:?}");
                }
            }
        }
    }

    #[test]
    fn any_encoded_key_is_its_own_root_key(k in ".{1,32}") {
        prop_assume!(!(k == "health" || k == "metrics" || k == "v1" || k.starts_with("v1/")));
        let path = format!("/{}", encode(&k));
        prop_assert_eq!(root_key(&path, &Method::PUT).ok(), Some(k));
    }

    #[test]
    fn node_ids_are_positive_integers(s in prop_oneof![".{0,24}", "[0-9]{1,22}", "-?[0-9]{1,4}"]) {
        match node_id(&s) {
            Ok(id) => {
                prop_assert!(id > 0);
                prop_assert_eq!(s.parse::<u64>().ok(), Some(id));
            }
            Err(e) => prop_assert!(is_client_error(&e), "{e:?}"),
        }
    }

    #[test]
    fn preconditions_never_panic(
        m in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..24)),
        n in proptest::option::of(prop_oneof![
            Just(b"*".to_vec()),
            Just(b"\"3\"".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..24),
        ]),
    ) {
        let mut headers = HeaderMap::new();
        let mut set = |name, v: Option<Vec<u8>>| {
            if let Some(v) = v.and_then(|v| HeaderValue::from_bytes(&v).ok()) {
                headers.insert(name, v);
            }
        };
        set(axum::http::header::IF_MATCH, m);
        set(axum::http::header::IF_NONE_MATCH, n);
        if let Err(e) = precondition(&headers) {
            prop_assert!(is_client_error(&e), "{e:?}");
        }
    }

    #[test]
    fn txn_bodies_of_random_bytes_are_refused_cleanly(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Err(e) = decode_txn(&body, 1 << 20) {
            prop_assert!(is_client_error(&e), "{e:?}");
        }
    }

    #[test]
    fn txn_bodies_close_to_valid_ones_are_decoded_or_refused_cleanly(
        body in txn_body(),
        max_value in 0usize..64,
    ) {
        let bytes = serde_json::to_vec(&body).unwrap();
        if let Err(e) = decode_txn(&bytes, max_value) {
            prop_assert!(is_client_error(&e), "{e:?}");
        }
    }

    #[test]
    fn txn_bodies_mutated_byte_by_byte_are_refused_cleanly(
        body in txn_body(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut bytes = serde_json::to_vec(&body).unwrap();
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        if let Err(e) = decode_txn(&bytes, 1 << 20) {
            prop_assert!(is_client_error(&e), "{e:?}");
        }
    }
}
