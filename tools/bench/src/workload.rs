//! What the load generator sends: keys, values, the mix of operations, and how each target
//! (coordinate's HTTP API, etcd's v3 JSON gateway, or etcd's v3 gRPC API, which both serve)
//! spells a request and its success.
//!
//! Everything here is deterministic given a seed, and does no I/O, so it is tested without a
//! server. Keys are `<prefix><index>` with the index zero-padded to 8 digits over a fixed key
//! space; values are slices of one random printable buffer (no allocation per PUT on
//! coordinate; etcd needs base64 in a JSON body, built per request on both sides alike).

use base64::Engine as _;
use bytes::Bytes;
use hyper::{Method, StatusCode};

use super::{ReadMode, Target, Workload};
use coordinate_client::{key_path, Response};

/// A small, fast, seedable generator (SplitMix64): the load must not wait on a lock or a
/// syscall for randomness, and runs with the same seed send the same keys.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant for load generation).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Value sizes: one size, or a uniform range `min..=max` in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SizeRange {
    pub min: usize,
    pub max: usize,
}

impl SizeRange {
    /// Parses `128` or `100-256`.
    pub fn parse(s: &str) -> Result<SizeRange, String> {
        let num = |t: &str| {
            t.trim()
                .parse::<usize>()
                .map_err(|_| format!("{t:?} is not a size in bytes"))
        };
        let (min, max) = match s.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let n = num(s)?;
                (n, n)
            }
        };
        if min == 0 {
            return Err("values must be at least 1 byte".into());
        }
        if min > max {
            return Err(format!(
                "empty range {min}-{max}: the minimum is above the maximum"
            ));
        }
        if max > 16 << 20 {
            return Err(format!(
                "{max} bytes is above the 16 MiB this tool supports"
            ));
        }
        Ok(SizeRange { min, max })
    }

    pub fn pick(&self, rng: &mut Rng) -> usize {
        self.min + rng.below((self.max - self.min + 1) as u64) as usize
    }
}

impl std::fmt::Display for SizeRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}-{}", self.min, self.max)
        }
    }
}

/// The name of key number `i`.
pub fn key_name(prefix: &str, i: u64) -> String {
    format!("{prefix}{i:08}")
}

/// The kind of an operation, for the per-kind latency histograms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Put,
    Get,
}

impl OpKind {
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Put => "put",
            OpKind::Get => "get",
        }
    }
}

/// One request, ready for [`coordinate_client::Connection::request`] (for the gRPC target,
/// `path` is the key and `method` is unused: see `crate::grpc`).
#[derive(Clone, Debug)]
pub struct Request<'a> {
    pub kind: OpKind,
    pub method: Method,
    pub path: &'a str,
    pub body: Bytes,
}

/// How an answer counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The operation succeeded (for a read: the key was there).
    Ok,
    /// A read succeeded but the key does not exist (still a served, successful read).
    NotFound,
    /// An HTTP answer that is not a success for this operation: counted as an error of this
    /// kind (e.g. `http 503`).
    Error(String),
}

/// Per-key request pieces, computed once so the hot loop only clones and formats.
enum Keys {
    Coordinate {
        /// `/<key>` for PUT and linearizable GET.
        paths: Vec<String>,
        /// `/v1/kv/<key>?consistency=serializable`, if reads are serializable.
        serializable: Vec<String>,
    },
    Etcd {
        /// base64 of each key, for the JSON bodies.
        keys_b64: Vec<String>,
    },
    /// The key names themselves (the gRPC client encodes them).
    Grpc { names: Vec<String> },
}

/// Everything a worker needs to make requests: shared, read-only.
pub struct Plan {
    target: Target,
    workload: Workload,
    read_ratio: f64,
    read_mode: ReadMode,
    key_count: u64,
    values: SizeRange,
    keys: Keys,
    /// Random printable bytes; a value is a slice of it at a random offset.
    pool: Bytes,
}

/// Extra bytes in the value pool beyond the largest value, so offsets vary.
const POOL_SLACK: usize = 4096;

impl Plan {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        target: Target,
        workload: Workload,
        read_ratio: f64,
        read_mode: ReadMode,
        key_prefix: &str,
        key_count: u64,
        values: SizeRange,
        seed: u64,
    ) -> Plan {
        let names = (0..key_count).map(|i| key_name(key_prefix, i));
        let keys = match target {
            Target::Coordinate => {
                let paths: Vec<String> = names.map(|k| key_path(&k)).collect();
                let serializable = if read_mode == ReadMode::Serializable {
                    paths
                        .iter()
                        .map(|p| format!("/v1/kv{p}?consistency=serializable"))
                        .collect()
                } else {
                    Vec::new()
                };
                Keys::Coordinate {
                    paths,
                    serializable,
                }
            }
            Target::Etcd => Keys::Etcd {
                keys_b64: names.map(|k| b64(k.as_bytes())).collect(),
            },
            Target::Grpc => Keys::Grpc {
                names: names.collect(),
            },
        };
        let mut rng = Rng::new(seed ^ 0x005E_ED0F_DA7A);
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let pool: Vec<u8> = (0..values.max + POOL_SLACK)
            .map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize])
            .collect();
        Plan {
            target,
            workload,
            read_ratio,
            read_mode,
            key_count,
            values,
            keys,
            pool: pool.into(),
        }
    }

    pub fn key_count(&self) -> u64 {
        self.key_count
    }

    /// The next operation of the workload, on a uniformly random key.
    pub fn next(&self, rng: &mut Rng) -> Request<'_> {
        let key = rng.below(self.key_count);
        let read = match self.workload {
            Workload::Put => false,
            Workload::Get => true,
            Workload::Mixed => rng.unit() < self.read_ratio,
        };
        if read {
            self.get(key)
        } else {
            self.put(key, rng)
        }
    }

    /// A value of a random size from the configured range.
    pub fn value(&self, rng: &mut Rng) -> Bytes {
        let len = self.values.pick(rng);
        let off = rng.below((self.pool.len() - len + 1) as u64) as usize;
        self.pool.slice(off..off + len)
    }

    /// A write of a random value to key number `key`.
    pub fn put(&self, key: u64, rng: &mut Rng) -> Request<'_> {
        let value = self.value(rng);
        let key = key as usize;
        match &self.keys {
            Keys::Coordinate { paths, .. } => Request {
                kind: OpKind::Put,
                method: Method::PUT,
                path: &paths[key],
                body: value,
            },
            Keys::Etcd { keys_b64 } => Request {
                kind: OpKind::Put,
                method: Method::POST,
                path: "/v3/kv/put",
                body: format!(r#"{{"key":"{}","value":"{}"}}"#, keys_b64[key], b64(&value)).into(),
            },
            Keys::Grpc { names } => Request {
                kind: OpKind::Put,
                method: Method::POST,
                path: &names[key],
                body: value,
            },
        }
    }

    /// A read of key number `key` in the configured read mode.
    pub fn get(&self, key: u64) -> Request<'_> {
        let key = key as usize;
        match &self.keys {
            Keys::Coordinate {
                paths,
                serializable,
            } => Request {
                kind: OpKind::Get,
                method: Method::GET,
                path: match self.read_mode {
                    ReadMode::Linearizable => &paths[key],
                    ReadMode::Serializable => &serializable[key],
                },
                body: Bytes::new(),
            },
            Keys::Etcd { keys_b64 } => Request {
                kind: OpKind::Get,
                method: Method::POST,
                path: "/v3/kv/range",
                body: match self.read_mode {
                    ReadMode::Linearizable => format!(r#"{{"key":"{}"}}"#, keys_b64[key]),
                    ReadMode::Serializable => {
                        format!(r#"{{"key":"{}","serializable":true}}"#, keys_b64[key])
                    }
                }
                .into(),
            },
            Keys::Grpc { names } => Request {
                kind: OpKind::Get,
                method: Method::POST,
                path: &names[key],
                body: Bytes::new(),
            },
        }
    }

    /// Whether `resp` is a success for an operation of `kind` on this target.
    pub fn classify(&self, kind: OpKind, resp: &Response) -> Outcome {
        classify(self.target, kind, resp)
    }
}

/// Success rules: coordinate answers a PUT with 204 and a GET with 200 (or 404 for a missing
/// key); etcd's gateway answers 200 to both, and a range that found the key has `"kvs"`.
pub fn classify(target: Target, kind: OpKind, resp: &Response) -> Outcome {
    let status = resp.status;
    match (target, kind) {
        (Target::Coordinate, OpKind::Put) if status == StatusCode::NO_CONTENT => Outcome::Ok,
        (Target::Coordinate, OpKind::Get) if status == StatusCode::OK => Outcome::Ok,
        (Target::Coordinate, OpKind::Get) if status == StatusCode::NOT_FOUND => Outcome::NotFound,
        (Target::Etcd, OpKind::Put) if status == StatusCode::OK => Outcome::Ok,
        (Target::Etcd, OpKind::Get) if status == StatusCode::OK => {
            if memchr_subslice(&resp.body, b"\"kvs\"") {
                Outcome::Ok
            } else {
                Outcome::NotFound
            }
        }
        _ => Outcome::Error(format!("http {}", status.as_u16())),
    }
}

fn memchr_subslice(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(target: Target, workload: Workload, read_mode: ReadMode) -> Plan {
        Plan::new(
            target,
            workload,
            0.5,
            read_mode,
            "bench-",
            1000,
            SizeRange { min: 100, max: 256 },
            7,
        )
    }

    fn resp(status: u16, body: &'static str) -> Response {
        Response::new(
            StatusCode::from_u16(status).unwrap(),
            Bytes::from_static(body.as_bytes()),
        )
    }

    #[test]
    fn size_ranges_parse() {
        assert_eq!(
            SizeRange::parse("128"),
            Ok(SizeRange { min: 128, max: 128 })
        );
        assert_eq!(
            SizeRange::parse("100-256"),
            Ok(SizeRange { min: 100, max: 256 })
        );
        assert!(SizeRange::parse("0").is_err());
        assert!(SizeRange::parse("256-100").is_err());
        assert!(SizeRange::parse("abc").is_err());
        assert!(SizeRange::parse("1-").is_err());
        assert_eq!(SizeRange::parse("100-256").unwrap().to_string(), "100-256");
        assert_eq!(SizeRange::parse("64").unwrap().to_string(), "64");
    }

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let (mut a, mut b) = (Rng::new(1), Rng::new(1));
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
            assert!(a.below(10) < 10);
            b.below(10);
            let u = a.unit();
            b.unit();
            assert!((0.0..1.0).contains(&u));
        }
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn keys_are_named_and_encoded() {
        assert_eq!(key_name("bench-", 42), "bench-00000042");
        let p = plan(Target::Coordinate, Workload::Get, ReadMode::Linearizable);
        let r = p.get(42);
        assert_eq!((r.method, r.path), (Method::GET, "/bench-00000042"));
        let p = plan(Target::Coordinate, Workload::Get, ReadMode::Serializable);
        assert_eq!(
            p.get(7).path,
            "/v1/kv/bench-00000007?consistency=serializable"
        );
        let mut rng = Rng::new(3);
        let w = p.put(7, &mut rng);
        assert_eq!((w.method, w.path), (Method::PUT, "/bench-00000007"));
    }

    #[test]
    fn etcd_requests_are_base64_json() {
        let p = plan(Target::Etcd, Workload::Put, ReadMode::Linearizable);
        let mut rng = Rng::new(3);
        let w = p.put(1, &mut rng);
        assert_eq!((w.method, w.path), (Method::POST, "/v3/kv/put"));
        let json: serde_json::Value = serde_json::from_slice(&w.body).unwrap();
        let dec = |v: &serde_json::Value| {
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap()
        };
        assert_eq!(dec(&json["key"]), b"bench-00000001");
        let value = dec(&json["value"]);
        assert!((100..=256).contains(&value.len()));
        assert!(value.iter().all(u8::is_ascii_alphanumeric));

        let r = p.get(1);
        assert_eq!(r.path, "/v3/kv/range");
        let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(dec(&json["key"]), b"bench-00000001");
        assert!(json.get("serializable").is_none());
        let p = plan(Target::Etcd, Workload::Get, ReadMode::Serializable);
        let json: serde_json::Value = serde_json::from_slice(&p.get(1).body).unwrap();
        assert_eq!(json["serializable"], true);
    }

    #[test]
    fn grpc_requests_name_the_key_and_carry_the_value() {
        let p = plan(Target::Grpc, Workload::Put, ReadMode::Linearizable);
        let mut rng = Rng::new(1);
        let put = p.put(7, &mut rng);
        assert_eq!((put.kind, put.path), (OpKind::Put, "bench-00000007"));
        assert!((100..=256).contains(&put.body.len()));
        let get = p.get(7);
        assert_eq!((get.kind, get.path), (OpKind::Get, "bench-00000007"));
        assert!(get.body.is_empty());
    }

    #[test]
    fn values_respect_the_size_range() {
        let p = plan(Target::Coordinate, Workload::Put, ReadMode::Linearizable);
        let mut rng = Rng::new(9);
        let sizes: Vec<usize> = (0..5000).map(|_| p.value(&mut rng).len()).collect();
        assert!(sizes.iter().all(|s| (100..=256).contains(s)));
        assert!(sizes.contains(&100) && sizes.contains(&256));
    }

    #[test]
    fn workloads_pick_their_mix() {
        let mut rng = Rng::new(5);
        let p = plan(Target::Coordinate, Workload::Put, ReadMode::Linearizable);
        assert!((0..100).all(|_| p.next(&mut rng).kind == OpKind::Put));
        let p = plan(Target::Coordinate, Workload::Get, ReadMode::Linearizable);
        assert!((0..100).all(|_| p.next(&mut rng).kind == OpKind::Get));
        let p = plan(Target::Coordinate, Workload::Mixed, ReadMode::Linearizable);
        let reads = (0..10_000)
            .filter(|_| p.next(&mut rng).kind == OpKind::Get)
            .count();
        assert!(
            (4000..6000).contains(&reads),
            "{reads} reads of 10000 at ratio 0.5"
        );
    }

    #[test]
    fn answers_are_classified_per_target() {
        use Outcome::*;
        let c = Target::Coordinate;
        assert_eq!(classify(c, OpKind::Put, &resp(204, "")), Ok);
        assert_eq!(classify(c, OpKind::Get, &resp(200, "v")), Ok);
        assert_eq!(classify(c, OpKind::Get, &resp(404, "")), NotFound);
        assert_eq!(
            classify(c, OpKind::Put, &resp(503, "no leader")),
            Error("http 503".into())
        );
        assert_eq!(
            classify(c, OpKind::Put, &resp(200, "")),
            Error("http 200".into())
        );
        let e = Target::Etcd;
        assert_eq!(classify(e, OpKind::Put, &resp(200, "{}")), Ok);
        assert_eq!(
            classify(
                e,
                OpKind::Get,
                &resp(200, r#"{"header":{},"kvs":[{}],"count":"1"}"#)
            ),
            Ok
        );
        assert_eq!(
            classify(e, OpKind::Get, &resp(200, r#"{"header":{}}"#)),
            NotFound
        );
        assert_eq!(
            classify(e, OpKind::Get, &resp(500, "{}")),
            Error("http 500".into())
        );
    }
}
